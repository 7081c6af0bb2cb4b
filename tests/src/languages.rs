//! The Python and JavaScript plugins in `plugins/`, built with `nachfass
//! plugin build` (componentize-py, componentize-js) once per change of
//! their sources: the component is kept in `target/lang-guests` under a
//! hash of the sources and the WIT, so a test run builds each once and
//! later runs none. `tests/run` installs the toolchains.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A plugin project in another language, by directory under the repository.
#[derive(Clone, Copy, Debug)]
pub struct LangGuest {
    pub dir: &'static str,
}

pub const ENGAGEMENT_PY: LangGuest = LangGuest {
    dir: "plugins/scoring/engagement-py",
};
pub const ENGAGEMENT_JS: LangGuest = LangGuest {
    dir: "plugins/scoring/engagement-js",
};
pub const CHAT_WEBHOOK_JS: LangGuest = LangGuest {
    dir: "plugins/channels/chat-webhook-js",
};
pub const ENDLESS_LOOP_PY: LangGuest = LangGuest {
    dir: "plugins/fixtures/endless-loop-py",
};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the repository")
        .to_path_buf()
}

/// Files that are generated or installed, not sources.
fn generated(name: &str) -> bool {
    matches!(
        name,
        "bindings" | "node_modules" | "__pycache__" | ".pytest_cache"
    ) || name.ends_with(".wasm")
}

fn hash_tree(dir: &Path, hasher: &mut DefaultHasher) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable source dir")
        .filter_map(Result::ok)
        .filter(|e| !generated(&e.file_name().to_string_lossy()))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        entry.file_name().hash(hasher);
        if path.is_dir() {
            hash_tree(&path, hasher);
        } else {
            std::fs::read(&path).expect("readable source").hash(hasher);
        }
    }
}

impl LangGuest {
    pub fn project(&self) -> PathBuf {
        repo_root().join(self.dir)
    }

    /// The component with its manifest embedded, built now if its sources
    /// (or the WIT, or the nachfass binary) changed since the last build.
    #[track_caller]
    pub fn built(&self) -> PathBuf {
        static BUILDING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        let project = self.project();
        let mut hasher = DefaultHasher::new();
        hash_tree(&project, &mut hasher);
        hash_tree(&repo_root().join("wit"), &mut hasher);
        let binary = crate::server::binary();
        std::fs::metadata(&binary)
            .and_then(|m| m.modified())
            .ok()
            .hash(&mut hasher);
        let name = project
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        let dir = repo_root().join("target/lang-guests");
        std::fs::create_dir_all(&dir).expect("target is writable");
        let out = dir.join(format!("{name}-{:016x}.wasm", hasher.finish()));
        if out.exists() {
            return out;
        }
        if project.join("package.json").exists() && !project.join("node_modules").exists() {
            // One installation of componentize-js serves every example.
            let shared = repo_root().join(CHAT_WEBHOOK_JS.dir).join("node_modules");
            assert!(
                shared.exists(),
                "{} is missing: run `npm install` there (tests/run does)",
                shared.display()
            );
            std::os::unix::fs::symlink(&shared, project.join("node_modules"))
                .expect("link node_modules");
        }
        let partial = out.with_extension(format!("part{}", std::process::id()));
        let built = Command::new(&binary)
            .args(["plugin", "build"])
            .arg(&project)
            .arg("--out")
            .arg(&partial)
            .output()
            .expect("nachfass runs");
        assert!(
            built.status.success(),
            "nachfass plugin build {} failed (tests/run installs componentize-py and componentize-js):\n{}",
            project.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::rename(&partial, &out).expect("rename in target");
        out
    }
}
