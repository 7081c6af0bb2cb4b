//! JavaScript plugins: an ES module built with componentize-js, with its
//! manifest under `"nachfass"` in `package.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::super::{CliError, fail};
use super::wit;
use crate::pack;
use crate::runtime::World;

/// The componentize-js release the scaffolds and docs name.
pub const COMPONENTIZE_JS: &str = "0.23";

/// Builds with componentize-js's API from the project's own node_modules
/// (its CLI needs packages npm does not install with it). Arguments: entry
/// module, WIT directory, world, output file, features to disable.
const BUILD_SCRIPT: &str = r#"
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const [sourcePath, witPath, worldName, out, disable] = process.argv.slice(1);
const { component } = await componentize({
  sourcePath, witPath, worldName,
  disableFeatures: disable ? disable.split(',') : [],
});
await writeFile(out, component);
"#;

/// Builds the project at `dir` into `target` with its manifest embedded.
pub fn build(dir: &Path, target: Option<PathBuf>) -> Result<(String, PathBuf), CliError> {
    // The toolchains run in other directories: absolute paths only.
    let dir = &dir
        .canonicalize()
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let manifest = pack::manifest_from_package_json(dir).map_err(fail)?;
    let package: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("package.json")).map_err(fail)?)
            .map_err(fail)?;
    let entry = dir.join(package["main"].as_str().unwrap_or("index.js"));
    if !entry.is_file() {
        return Err(fail(format!(
            "{} does not exist: `main` in package.json names the module with the exports",
            entry.display()
        )));
    }
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        return Err(fail(format!(
            "componentize-js is not installed in {}: run `npm install` there (package.json lists @bytecodealliance/componentize-js@{COMPONENTIZE_JS})",
            dir.display()
        )));
    }
    let work = tempfile::tempdir().map_err(fail)?;
    let wit_dir = work.path().join("wit");
    wit::write_package(wit::SINCE_V0_1_0, &wit_dir).map_err(fail)?;
    let component = work.path().join("component.wasm");
    // Only channels may reach wasi:http: elsewhere the engine's fetch()
    // and its incoming-request support would import what the world does
    // not grant.
    let disable = if manifest.world == World::Channel {
        ""
    } else {
        "http,fetch-event"
    };
    let status = Command::new(std::env::var("NACHFASS_NODE").unwrap_or_else(|_| "node".into()))
        .current_dir(dir)
        .args(["--input-type=module", "-e", BUILD_SCRIPT])
        .arg(&entry)
        .arg(&wit_dir)
        .arg(super::world_id(manifest.world))
        .arg(&component)
        .arg(disable)
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run node ({e}); install Node.js 20 or newer"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!("componentize-js failed ({status})")));
    }
    let target =
        target.unwrap_or_else(|| dir.join(format!("{}-{}.wasm", manifest.name, manifest.version)));
    pack::pack(&component, &manifest, &target).map_err(fail)?;
    Ok((manifest.id(), target))
}

/// Writes a new project for `world` into `root` (which does not exist yet).
pub fn scaffold(world: World, name: &str, root: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(root.join("test")).map_err(fail)?;
    let capabilities = if world == World::Channel {
        r#"["http"]"#
    } else {
        "[]"
    };
    let package = format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "description": "A nachfass {world}",
  "type": "module",
  "main": "plugin.js",
  "scripts": {{ "test": "node --test" }},
  "devDependencies": {{ "@bytecodealliance/componentize-js": "^{COMPONENTIZE_JS}" }},
  "nachfass": {{
    "world": "{world}",
    "config": [],
    "capabilities": {capabilities}
  }}
}}
"#
    );
    let (logic, plugin, test) = match world {
        World::SegmentRule => (
            "/** Pure logic, tested with `node --test`. */\nexport const hasEmail = (contact) => contact.email != null;\n",
            r#"// Exports of the segment-rule world (WIT names in camelCase).
import { hasEmail } from './logic.js';

export function matches(contact, _activity) {
  return hasEmail(contact);
}

export function matchesBatch(items) {
  return items.map((item) => hasEmail(item.contact));
}
"#,
            r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasEmail } from '../logic.js';

test('contacts with an email match', () => {
  assert.equal(hasEmail({ email: 'a@b.example' }), true);
  assert.equal(hasEmail({ email: undefined }), false);
});
"#,
        ),
        World::Scorer => (
            r#"/** Pure logic, tested with `node --test`; `config` is host.config in the sandbox. */
export function score(config, event) {
  const raw = config('points') ?? '5';
  const points = Number.parseInt(raw, 10);
  // A thrown plugin-error record is the plugin's own error answer.
  if (!Number.isInteger(points)) throw { code: 'bad-config', message: `configuration \`points\` \`${raw}\` is not a whole number` };
  return event.kind === 'download' ? { delta: points, reasons: [`download +${points}`] } : { delta: 0, reasons: [] };
}
"#,
            r#"// Exports of the scorer world (WIT names in camelCase).
import { config } from 'nachfass:plugin/host@0.1.0';
import { score } from './logic.js';

export function onEvent(_contact, event, _activity) {
  return score(config, event);
}

export function onProfile(_contact) {
  return { delta: 0, reasons: [] };
}
"#,
            r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { score } from '../logic.js';

const config = (values) => (key) => values[key];

test('downloads score', () => {
  assert.equal(score(config({ points: '7' }), { kind: 'download' }).delta, 7);
  assert.equal(score(config({}), { kind: 'page.visited' }).delta, 0);
});

test('bad points are a plugin error', () => {
  assert.throws(() => score(config({ points: 'many' }), { kind: 'download' }), (e) => e.code === 'bad-config');
});
"#,
        ),
        World::Channel => (
            r#"/** Pure logic, tested with `node --test`. */
export function outcome(status) {
  if (status >= 200 && status < 300) return null;
  return status >= 500 || status === 429
    ? { tag: 'transient', val: `answered ${status}` }
    : { tag: 'permanent', val: `answered ${status}` };
}
"#,
            r#"// Exports of the channel world (WIT names in camelCase). fetch() goes
// through wasi:http; the host allows only the binding's allow-list.
import { config } from 'nachfass:plugin/host@0.1.0';
import { outcome } from './logic.js';

export function describe() {
  return { kind: 'webhook', provider: 'NAME' };
}

export async function deliver(message) {
  const url = config('url');
  if (!url) throw { tag: 'permanent', val: 'configuration `url` is required but not set' };
  let response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'idempotency-key': message.idempotencyKey },
      body: message.text,
    });
  } catch (e) {
    throw { tag: 'transient', val: String(e) };
  }
  const error = outcome(response.status);
  if (error) throw error;
  return { providerId: undefined };
}

export function parseCallback(_request) {
  return [];
}
"#,
            r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { outcome } from '../logic.js';

test('statuses map to done, retry and refusal', () => {
  assert.equal(outcome(204), null);
  assert.equal(outcome(503).tag, 'transient');
  assert.equal(outcome(404).tag, 'permanent');
});
"#,
        ),
    };
    let file = |path: &str, text: &str| std::fs::write(root.join(path), text).map_err(fail);
    file("package.json", &package)?;
    file("logic.js", logic)?;
    file("plugin.js", &plugin.replace("NAME", name))?;
    file("test/logic.test.js", test)?;
    file(
        ".gitignore",
        "# Written by npm install / nachfass plugin build.\nnode_modules/\n*.wasm\n",
    )
}
