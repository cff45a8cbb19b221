//! Virtual media: the CD/DVD device under the system or under its manager
//! (vendors differ), InsertMedia with an image URL the BMC downloads, and
//! EjectMedia.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::info;

use super::{Client, ErrorKind, Result, System, system, task};

/// A virtual media device and what it holds.
#[derive(Debug, Clone)]
pub struct Media {
    /// Its `@odata.id`.
    pub path: String,
    pub id: String,
    pub image: Option<String>,
    pub inserted: bool,
    insert_target: String,
    eject_target: String,
}

fn parse(path: &str, v: &Value) -> Media {
    let target = |action: &str| {
        v.pointer(&format!("/Actions/#VirtualMedia.{action}/target"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{path}/Actions/VirtualMedia.{action}"))
    };
    Media {
        path: path.to_owned(),
        id: v.get("Id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        image: v
            .get("Image")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        inserted: v.get("Inserted").and_then(Value::as_bool).unwrap_or(false),
        insert_target: target("InsertMedia"),
        eject_target: target("EjectMedia"),
    }
}

fn is_cd(v: &Value) -> bool {
    let types = v.get("MediaTypes").and_then(Value::as_array);
    types.is_some_and(|t| t.iter().any(|m| matches!(m.as_str(), Some("CD" | "DVD"))))
        || v.get("Id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.eq_ignore_ascii_case("cd"))
}

/// Finds the CD/DVD device: in the system's VirtualMedia, else in its
/// managers' VirtualMedia.
pub async fn find_cd(client: &Client, sys: &System) -> Result<Media> {
    let mut collections: Vec<String> = sys.virtual_media.iter().cloned().collect();
    for m in &sys.managers {
        let r = client.get(m, "reading the system's manager").await?;
        if let Some(vm) = r.body.pointer("/VirtualMedia/@odata.id").and_then(Value::as_str)
            && !collections.iter().any(|c| c == vm)
        {
            collections.push(vm.to_owned());
        }
    }
    for coll in &collections {
        for dev in system::members(client, coll, "listing virtual media").await? {
            let r = client.get(&dev, "reading a virtual media device").await?;
            if is_cd(&r.body) {
                return Ok(parse(&dev, &r.body));
            }
        }
    }
    Err(client.err(ErrorKind::Unsupported(format!(
        "system {} has no virtual CD/DVD device (looked in: {})",
        sys.id,
        if collections.is_empty() {
            "no VirtualMedia collection under the system or its managers".to_owned()
        } else {
            collections.join(", ")
        }
    ))))
}

/// Reads a device again.
pub async fn read(client: &Client, path: &str) -> Result<Media> {
    let r = client.get(path, "reading the virtual media").await?;
    Ok(parse(path, &r.body))
}

/// Inserts `image_url` into the system's virtual CD (ejecting another image
/// first), waits for a task if the BMC starts one, and checks it reads back.
pub async fn insert(client: &Client, sys: &System, image_url: &str) -> Result<Media> {
    client.check_identity(sys)?;
    let cd = find_cd(client, sys).await?;
    if cd.inserted && cd.image.as_deref() == Some(image_url) {
        return Ok(cd);
    }
    if cd.inserted {
        eject_device(client, &cd).await?;
    }
    info!(node = client.node(), bmc = client.bmc_url(), device = %cd.path, image = image_url, "inserting virtual media");
    let step = format!("inserting {image_url} into {}", cd.path);
    let body = json!({ "Image": image_url, "Inserted": true, "WriteProtected": true });
    let r = client.post(&cd.insert_target, &body, &step).await?;
    task::follow(client, &r, &step, Duration::from_secs(1800)).await?;
    let after = read(client, &cd.path).await?;
    if !after.inserted || after.image.as_deref() != Some(image_url) {
        return Err(client.err(ErrorKind::Protocol(format!(
            "{step}: the device reads inserted={} image={}",
            after.inserted,
            after.image.as_deref().unwrap_or("(none)")
        ))));
    }
    Ok(after)
}

/// Ejects whatever the system's virtual CD holds.
pub async fn eject(client: &Client, sys: &System) -> Result<Media> {
    let cd = find_cd(client, sys).await?;
    if !cd.inserted && cd.image.is_none() {
        return Ok(cd);
    }
    eject_device(client, &cd).await?;
    let after = read(client, &cd.path).await?;
    if after.inserted {
        return Err(client.err(ErrorKind::Protocol(format!(
            "ejecting {}: the device still reads inserted",
            cd.path
        ))));
    }
    Ok(after)
}

async fn eject_device(client: &Client, cd: &Media) -> Result<()> {
    info!(node = client.node(), device = %cd.path, "ejecting virtual media");
    let step = format!("ejecting the virtual media of {}", cd.path);
    let r = client.post(&cd.eject_target, &json!({}), &step).await?;
    task::follow(client, &r, &step, Duration::from_secs(300)).await
}
