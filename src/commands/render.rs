//! `bootstrap render -i INV [--cluster C] --out DIR [--check] [--secrets FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::context::{EXIT_FAILURE, fail, load_inventory, selected, state_dir};
use crate::cli::{Global, RenderArgs};
use crate::inventory::{Cluster, Distribution};

use crate::render::{Rendered, SecretsBundle, check, render_cluster, write};

/// Files added to a cluster's output besides its node configs (the exported
/// manifests): `(path under the cluster's directory, text)`.
pub type Extra<'a> = &'a dyn Fn(&Cluster) -> anyhow::Result<Vec<(PathBuf, String)>>;

/// Runs `render`: exit 0 when written (or up to date with `--check`), 1 on a
/// difference or an error.
pub fn run(g: &Global, args: &RenderArgs, extra: Extra) -> ExitCode {
    match run_inner(g, args, extra) {
        Ok(code) => code,
        Err(e) => fail(format!("render: {e:#}")),
    }
}

fn run_inner(g: &Global, args: &RenderArgs, extra: Extra) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_inventory(g) else {
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let clusters = selected(g, &loaded.inventory.clusters).map_err(anyhow::Error::msg)?;
    let state = state_dir(g, &loaded.inventory.path);
    if args.secrets.is_some() {
        let talos = clusters
            .iter()
            .filter(|c| c.distribution == Distribution::Talos)
            .count();
        if clusters.len() != 1 || talos != 1 {
            anyhow::bail!("--secrets imports one Talos bundle: select its cluster with --cluster NAME");
        }
    }
    let mut all = Rendered::default();
    for c in &clusters {
        let bundle = match (&args.secrets, args.check) {
            (Some(file), _) => SecretsBundle::import(&state, c, file)?,
            (None, true) => SecretsBundle::load(&state, c)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "cluster {}: no secrets in {} yet, so nothing can be compared: run `bootstrap render` without --check first",
                    c.name,
                    crate::render::secrets::cluster_dir(&state, &c.name).display()
                )
            })?,
            (None, false) => SecretsBundle::load_or_generate(&state, c)?,
        };
        let r = render_cluster(c, &bundle)?;
        all.files.extend(r.files);
        for (path, text) in extra(c)? {
            all.add(PathBuf::from(&c.name).join(path), text, 0o644);
        }
    }
    if args.check {
        return Ok(match check(&args.out, &all)? {
            None => {
                if !g.quiet {
                    eprintln!("{}: up to date ({} files)", args.out.display(), all.files.len());
                }
                ExitCode::SUCCESS
            }
            Some(diff) => {
                print!("{diff}");
                eprintln!(
                    "{} differs from what would be rendered (secret values redacted); run `bootstrap render` to update it",
                    args.out.display()
                );
                ExitCode::from(EXIT_FAILURE)
            }
        });
    }
    write(&args.out, &all)?;
    if !g.quiet {
        for c in &clusters {
            let n = all.files.keys().filter(|p| p.starts_with(&c.name)).count();
            println!("{}: {n} files in {}", c.name, args.out.join(&c.name).display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
