//! Writes each target's seed corpus, `fuzz/seeds/<target>/seed-<n>`, from the parsers' seeds
//! (the repository's example files and the answers the simulators and vendors' documents
//! give): `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds` from the repository.

#[allow(dead_code)]
#[path = "../../tests/it/parsers.rs"]
mod parsers;

fn main() -> std::io::Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for parser in parsers::all() {
        let dir = repo.join("fuzz/seeds").join(parser.name);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in (parser.seeds)(&repo).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
