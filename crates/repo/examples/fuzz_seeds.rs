//! Writes the fuzz targets' seed corpus: `fuzz_seeds DIR` makes
//! `DIR/<target>/<name>` for every seed of `ledgervault_repo::fuzz::seeds`.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: fuzz_seeds DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for (target, name, bytes) in ledgervault_repo::fuzz::seeds() {
        let d = dir.join(target);
        let written =
            std::fs::create_dir_all(&d).and_then(|()| std::fs::write(d.join(&name), &bytes));
        if let Err(e) = written {
            eprintln!("fuzz_seeds: cannot write {}: {e}", d.join(&name).display());
            std::process::exit(1);
        }
    }
}
