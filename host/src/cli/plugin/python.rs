//! Python plugins: a componentize-py project with its manifest under
//! `[tool.nachfass]` in `pyproject.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::super::{CliError, fail};
use super::wit;
use crate::pack;
use crate::runtime::World;

/// The componentize-py release the scaffolds and docs name.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.*";

fn componentize_py() -> String {
    std::env::var("NACHFASS_COMPONENTIZE_PY").unwrap_or_else(|_| "componentize-py".into())
}

/// Runs componentize-py with the built-in WIT for `world`.
fn run(wit_dir: &Path, world: World, args: &[&std::ffi::OsStr]) -> Result<(), CliError> {
    let status = Command::new(componentize_py())
        .arg("-d")
        .arg(wit_dir)
        .arg("-w")
        .arg(super::world_id(world))
        .args(args)
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run componentize-py ({e}); install it with `pip install '{COMPONENTIZE_PY}'`"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!("componentize-py failed ({status})")));
    }
    Ok(())
}

/// (Re)writes the typed stubs of `world` into `<dir>/bindings`, for editors
/// and for the project's tests.
pub fn stubs(dir: &Path, world: World) -> Result<(), CliError> {
    let wit_dir = tempfile::tempdir().map_err(fail)?;
    wit::write_package(wit::SINCE_V0_1_0, wit_dir.path()).map_err(fail)?;
    let bindings = dir.join("bindings");
    if bindings.exists() {
        std::fs::remove_dir_all(&bindings).map_err(fail)?;
    }
    run(
        wit_dir.path(),
        world,
        &["bindings".as_ref(), bindings.as_os_str()],
    )
}

/// Builds the project at `dir` into `target` with its manifest embedded.
pub fn build(dir: &Path, target: Option<PathBuf>) -> Result<(String, PathBuf), CliError> {
    // The toolchains run in other directories: absolute paths only.
    let dir = &dir
        .canonicalize()
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let manifest = pack::manifest_from_pyproject(dir).map_err(fail)?;
    if !dir.join("app.py").is_file() {
        return Err(fail(format!(
            "{} has no app.py: the component's exports are the class `WitWorld` in app.py",
            dir.display()
        )));
    }
    stubs(dir, manifest.world)?;
    let work = tempfile::tempdir().map_err(fail)?;
    wit::write_package(wit::SINCE_V0_1_0, &work.path().join("wit")).map_err(fail)?;
    let component = work.path().join("component.wasm");
    run(
        &work.path().join("wit"),
        manifest.world,
        &[
            "componentize".as_ref(),
            "app".as_ref(),
            "-p".as_ref(),
            dir.as_os_str(),
            "-o".as_ref(),
            component.as_os_str(),
        ],
    )?;
    let target =
        target.unwrap_or_else(|| dir.join(format!("{}-{}.wasm", manifest.name, manifest.version)));
    pack::pack(&component, &manifest, &target).map_err(fail)?;
    Ok((manifest.id(), target))
}

/// Writes a new project for `world` into `root` (which does not exist yet).
pub fn scaffold(world: World, name: &str, root: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(root.join("tests")).map_err(fail)?;
    let capabilities = if world == World::Channel {
        r#"["http"]"#
    } else {
        "[]"
    };
    let pyproject = format!(
        r#"[project]
name = "{name}"
version = "0.1.0"
description = "A nachfass {world}"
requires-python = ">=3.11"

# The plugin manifest: `nachfass plugin build` embeds it in the component.
[tool.nachfass]
world = "{world}"
config = []
capabilities = {capabilities}

[tool.pytest.ini_options]
# Typed stubs of the WIT world, written by `nachfass plugin new` / `build`.
pythonpath = [".", "bindings"]
"#
    );
    let (app, test) = match world {
        World::SegmentRule => (
            r#""""The component's exports: the class WitWorld implements the segment-rule world."""

from typing import List

import wit_world
from wit_world.imports import types


def has_email(contact: types.Contact) -> bool:
    return contact.email is not None


class WitWorld(wit_world.WitWorld):
    def matches(self, contact: types.Contact, activity: List[types.ActivityCount]) -> bool:
        return has_email(contact)

    def matches_batch(self, items: List[types.RuleInput]) -> List[bool]:
        return [has_email(item.contact) for item in items]
"#
            .to_owned(),
            r#"from wit_world.imports import types

import app


def contact(email):
    return types.Contact("c", email, None, None, 0, "new", [], [], 0, None)


def test_contacts_with_email_match():
    assert app.has_email(contact("a@b.example"))
    assert not app.has_email(contact(None))
"#
            .to_owned(),
        ),
        World::Scorer => (
            r#""""The component's exports: the class WitWorld implements the scorer world."""

from typing import Callable, List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def score(config: Callable[[str], Optional[str]], event: types.Event) -> types.ScoreChange:
    """Pure logic, testable with pytest: `config` is `host.config` in the sandbox."""
    raw = config("points") or "5"
    try:
        points = int(raw)
    except ValueError:
        raise Err(types.PluginError("bad-config", f"configuration `points` `{{raw}}` is not a whole number"))
    if event.kind == "download":
        return types.ScoreChange(points, [f"download {{points:+d}}"])
    return types.ScoreChange(0, [])


class WitWorld(wit_world.WitWorld):
    def on_event(
        self, contact: types.Contact, event: types.Event, activity: List[types.ActivityCount]
    ) -> types.ScoreChange:
        return score(host.config, event)

    def on_profile(self, contact: types.Contact) -> types.ScoreChange:
        return types.ScoreChange(0, [])
"#
            .to_owned(),
            r#"import pytest
from componentize_py_types import Err
from wit_world.imports import types

import app


def event(kind):
    return types.Event("e", "c", kind, 0, [])


def test_downloads_score():
    assert app.score({"points": "7"}.get, event("download")).delta == 7
    assert app.score({}.get, event("page.visited")).delta == 0


def test_bad_points_are_a_plugin_error():
    with pytest.raises(Err):
        app.score({"points": "many"}.get, event("download"))
"#
            .to_owned(),
        ),
        World::Channel => (
            format!(
                r#""""The component's exports: the class WitWorld implements the channel world.

Outgoing HTTP goes through wasi:http (componentize-py's `poll_loop`
module); the host allows only the hosts of the binding's allow-list.
"""

from typing import List

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types


def recipient_ok(message: types.Message) -> bool:
    return "@" in message.to


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.ChannelInfo:
        return types.ChannelInfo(types.ChannelKind.WEBHOOK, "{name}")

    def deliver(self, message: types.Message) -> types.Delivery:
        if not recipient_ok(message):
            raise Err(types.SendError_Permanent(f"`{{message.to}}` is not an address"))
        host.log(host.Level.INFO, f"would deliver {{message.idempotency_key}}")
        return types.Delivery(None)

    def parse_callback(self, request: types.Callback) -> List[types.DeliveryEvent]:
        return []
"#
            ),
            r#"from wit_world.imports import types

import app


def message(to):
    return types.Message("k", to, None, "Hallo", None, [], [])


def test_addresses_are_checked():
    assert app.recipient_ok(message("a@b.example"))
    assert not app.recipient_ok(message("nobody"))
"#
            .to_owned(),
        ),
    };
    let file = |path: &str, text: &str| std::fs::write(root.join(path), text).map_err(fail);
    file("pyproject.toml", &pyproject)?;
    file("app.py", &app)?;
    file("tests/test_app.py", &test)?;
    file(
        ".gitignore",
        "# Written by nachfass plugin new / build.\nbindings/\n*.wasm\n__pycache__/\n",
    )?;
    // Stubs need componentize-py; without it the project is still complete
    // and `plugin build` writes them later.
    if let Err(e) = stubs(root, world) {
        tracing::warn!("typed stubs not written: {e}");
    }
    Ok(())
}
