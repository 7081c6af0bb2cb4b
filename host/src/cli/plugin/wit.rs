//! The WIT this binary speaks, built in: `plugin build` hands a version of
//! it to componentize-py and componentize-js, and `plugin wit` writes all
//! of it out for authors of any other language. Read from the repository's
//! one copy: `wit/since_v<version>/` per version, sharing `wit/deps/`
//! (each version's `deps` is a link to it, so every version directory is a
//! complete package for the tools).

use std::path::Path;

/// The files of one version of `nachfass:plugin`, by name in its directory.
pub type Package = &'static [(&'static str, &'static str)];

/// `nachfass:plugin@0.1.0`.
pub const SINCE_V0_1_0: Package = &[
    (
        "host.wit",
        include_str!("../../../../wit/since_v0.1.0/host.wit"),
    ),
    (
        "types.wit",
        include_str!("../../../../wit/since_v0.1.0/types.wit"),
    ),
    (
        "worlds.wit",
        include_str!("../../../../wit/since_v0.1.0/worlds.wit"),
    ),
];

/// `nachfass:plugin@0.2.0`: the scorer's `on-event-batch`.
pub const SINCE_V0_2_0: Package = &[
    (
        "host.wit",
        include_str!("../../../../wit/since_v0.2.0/host.wit"),
    ),
    (
        "types.wit",
        include_str!("../../../../wit/since_v0.2.0/types.wit"),
    ),
    (
        "worlds.wit",
        include_str!("../../../../wit/since_v0.2.0/worlds.wit"),
    ),
];

/// Every version, by directory name, oldest first.
pub const VERSIONS: &[(&str, Package)] = &[
    ("since_v0.1.0", SINCE_V0_1_0),
    ("since_v0.2.0", SINCE_V0_2_0),
];

/// The WASI packages every version refers to, by path under `deps/`.
pub const DEPS: &[(&str, &str)] = &[
    (
        "cli/cli.wit",
        include_str!("../../../../wit/deps/cli/cli.wit"),
    ),
    (
        "clocks/clocks.wit",
        include_str!("../../../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "filesystem/filesystem.wit",
        include_str!("../../../../wit/deps/filesystem/filesystem.wit"),
    ),
    (
        "http/http.wit",
        include_str!("../../../../wit/deps/http/http.wit"),
    ),
    ("io/io.wit", include_str!("../../../../wit/deps/io/io.wit")),
    (
        "random/random.wit",
        include_str!("../../../../wit/deps/random/random.wit"),
    ),
    (
        "sockets/sockets.wit",
        include_str!("../../../../wit/deps/sockets/sockets.wit"),
    ),
];

fn put(dir: &Path, path: &str, text: &str) -> std::io::Result<()> {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(file, text)
}

/// Writes one version into `dir` (created if missing) as a complete
/// package: its files, and the WASI packages under `deps/`.
pub fn write_package(package: Package, dir: &Path) -> std::io::Result<()> {
    for (path, text) in package {
        put(dir, path, text)?;
    }
    for (path, text) in DEPS {
        put(dir, &format!("deps/{path}"), text)?;
    }
    Ok(())
}

/// Writes every version as the repository keeps them: `deps/` and
/// `since_v<version>/`, each a complete package (with its own copy of
/// `deps/` where the repository has a link).
pub fn write(dir: &Path) -> std::io::Result<()> {
    for (path, text) in DEPS {
        put(dir, &format!("deps/{path}"), text)?;
    }
    for (version, package) in VERSIONS {
        write_package(package, &dir.join(version))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// A file added to `wit/` must be listed here, or `plugin build` would
    /// hand the toolchains an incomplete package. Links are followed, as
    /// the WIT tools follow them.
    #[test]
    fn lists_every_file_of_the_wit_directory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let written = tempfile::tempdir().unwrap();
        super::write(written.path()).unwrap();
        let mut listed = Vec::new();
        let mut dirs = vec![written.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let rel = path.strip_prefix(written.path()).unwrap();
                    listed.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        listed.sort();
        assert_eq!(listed, on_disk);
    }
}
