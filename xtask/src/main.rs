//! `cargo xtask`: the project's developer tasks.

fn main() -> anyhow::Result<()> {
    xtask::main()
}
