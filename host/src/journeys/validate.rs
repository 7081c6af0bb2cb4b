//! Checks a journey definition on save, so a mistake is found by the
//! operator who made it, not by a contact at 3 a.m.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use super::definition::{Condition, JourneyDef, SendWindow, Step, Template, Trigger};
use crate::render;

/// What a definition may refer to.
#[derive(Clone, Debug, Default)]
pub struct Known {
    pub channel_bindings: BTreeSet<String>,
    pub segments: BTreeSet<String>,
}

/// Every problem found, each naming the step or field it is about.
pub fn validate(def: &JourneyDef, known: &Known) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if !valid_name(&def.name) {
        problems.push(format!(
            "name `{}` must be 1-64 lower-case letters, digits or `-`, starting with a letter",
            def.name
        ));
    }
    if def.steps.is_empty() {
        problems.push("steps: a journey needs at least one step".to_owned());
    }
    check_trigger(&def.trigger, known, &mut problems);
    if let Some(window) = &def.send_window {
        check_window("send_window", window, &mut problems);
    }

    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (index, step) in def.steps.iter().enumerate() {
        let id = step.id();
        if id.is_empty() {
            problems.push(format!("steps[{index}]: the id is empty"));
        } else if ids.insert(id, index).is_some() {
            problems.push(format!("steps[{index}]: step id `{id}` is used twice"));
        }
    }
    for step in &def.steps {
        let at = format!("step `{}`", step.id());
        for target in step.targets().into_iter().flatten() {
            if !ids.contains_key(target) {
                problems.push(format!("{at}: unknown step target `{target}`"));
            }
        }
        check_step(&at, step, known, &mut problems);
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Reachability from the first step, and loops that never wait.
    let edges: Vec<Vec<usize>> = def
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            step.targets()
                .into_iter()
                .filter_map(|t| def.resolve(index, t))
                .filter_map(|t| ids.get(t.as_str()).copied())
                .collect()
        })
        .collect();
    let mut reached = vec![false; def.steps.len()];
    let mut stack = vec![0];
    while let Some(at) = stack.pop() {
        if !std::mem::replace(&mut reached[at], true) {
            stack.extend(&edges[at]);
        }
    }
    for (index, step) in def.steps.iter().enumerate() {
        if !reached[index] {
            problems.push(format!(
                "step `{}` is unreachable: no step leads to it",
                step.id()
            ));
        }
    }
    if let Some(cycle) = cycle_without_wait(def, &edges) {
        problems.push(format!(
            "steps {} form a loop without a wait: a run would spin forever; add a wait or wait_until step",
            cycle.join(" → ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_trigger(trigger: &Trigger, known: &Known, problems: &mut Vec<String>) {
    match trigger {
        Trigger::SegmentEntered(segment) | Trigger::SegmentLeft(segment) => {
            check_segment("trigger", segment, known, problems)
        }
        Trigger::StageChanged(stage) => check_stage("trigger", stage, problems),
        Trigger::Schedule {
            cron,
            timezone,
            condition,
        } => {
            if let Err(e) = cron::Schedule::from_str(cron) {
                problems.push(format!(
                    "trigger.schedule.cron: `{cron}` is not a cron expression ({e}); write six fields with seconds, e.g. `0 0 8 * * Mon`"
                ));
            }
            if let Some(tz) = timezone {
                check_timezone("trigger.schedule.timezone", tz, problems);
            }
            if let Some(condition) = condition {
                check_condition("trigger.schedule.condition", condition, known, problems);
            }
        }
        Trigger::Event { .. } | Trigger::ScoreAtLeast(_) | Trigger::Manual => {}
    }
}

fn check_step(at: &str, step: &Step, known: &Known, problems: &mut Vec<String>) {
    match step {
        Step::Send {
            binding,
            template,
            variants,
            send_window,
            ab_test,
            ..
        } => {
            if !known.channel_bindings.contains(binding) {
                problems.push(format!(
                    "{at}: missing binding `{binding}`: create a channel binding with that name first"
                ));
            }
            match (template, variants.is_empty()) {
                (None, true) => problems.push(format!("{at}: a send needs a template or variants")),
                (Some(_), false) => problems.push(format!(
                    "{at}: give either a template or variants, not both"
                )),
                _ => {}
            }
            if let Some(template) = template {
                check_template(at, template, problems);
            }
            let mut names = HashSet::new();
            for variant in variants {
                if !names.insert(&variant.name) {
                    problems.push(format!("{at}: variant `{}` is named twice", variant.name));
                }
                check_template(
                    &format!("{at}, variant `{}`", variant.name),
                    &variant.template,
                    problems,
                );
            }
            if let Some(test) = ab_test {
                if variants.len() < 2 {
                    problems.push(format!("{at}: an ab_test needs at least two variants"));
                }
                if !(0.5..1.0).contains(&test.confidence) {
                    problems.push(format!(
                        "{at}: ab_test confidence must be at least 0.5 and below 1, e.g. 0.95"
                    ));
                }
            }
            if !variants.is_empty() && variants.iter().all(|v| v.weight == 0) {
                problems.push(format!("{at}: every variant has weight 0"));
            }
            if let Some(window) = send_window {
                check_window(at, window, problems);
            }
        }
        Step::Branch { condition, .. } => check_condition(at, condition, known, problems),
        Step::SetAttribute { name, .. } if name.is_empty() => {
            problems.push(format!("{at}: the attribute name is empty"))
        }
        _ => {}
    }
}

fn check_template(at: &str, template: &Template, problems: &mut Vec<String>) {
    let parts = [
        ("subject", template.subject.as_deref()),
        ("text", Some(template.text.as_str())),
        ("html", template.html.as_deref()),
    ];
    for (part, source) in parts {
        if let Some(source) = source
            && let Err(e) = render::check(source)
        {
            problems.push(format!("{at}: the {part} template does not parse: {e}"));
        }
    }
}

fn check_condition(at: &str, condition: &Condition, known: &Known, problems: &mut Vec<String>) {
    match condition {
        Condition::InSegment(segment) => check_segment(at, segment, known, problems),
        Condition::StageAtLeast(stage) => check_stage(at, stage, problems),
        Condition::All(all) | Condition::Any(all) => {
            for c in all {
                check_condition(at, c, known, problems);
            }
        }
        Condition::Not(c) => check_condition(at, c, known, problems),
        Condition::ScoreAtLeast(_)
        | Condition::Attribute { .. }
        | Condition::HadEvent { .. }
        | Condition::InactiveFor(_) => {}
    }
}

fn check_segment(at: &str, segment: &str, known: &Known, problems: &mut Vec<String>) {
    if !known.segments.contains(segment) {
        problems.push(format!(
            "{at}: unknown segment `{segment}`: create a segment binding with that name first"
        ));
    }
}

fn check_stage(at: &str, stage: &str, problems: &mut Vec<String>) {
    if !crate::scoring::STAGES.contains(&stage) {
        problems.push(format!(
            "{at}: unknown stage `{stage}`; stages are {}",
            crate::scoring::STAGES.join(", ")
        ));
    }
}

fn check_window(at: &str, window: &SendWindow, problems: &mut Vec<String>) {
    if window.start >= window.end {
        problems.push(format!(
            "{at}: the send window must start before it ends ({} – {})",
            window.start, window.end
        ));
    }
    if window.days.is_empty() {
        problems.push(format!("{at}: the send window has no days"));
    }
    if let Some(tz) = &window.timezone {
        check_timezone(at, tz, problems);
    }
}

fn check_timezone(at: &str, tz: &str, problems: &mut Vec<String>) {
    if tz.parse::<chrono_tz::Tz>().is_err() {
        problems.push(format!(
            "{at}: unknown time zone `{tz}`; use an IANA name such as Europe/Berlin"
        ));
    }
}

/// A loop among steps that never pause, as step ids, if there is one.
fn cycle_without_wait(def: &JourneyDef, edges: &[Vec<usize>]) -> Option<Vec<String>> {
    // Depth-first search over the steps that do not wait; a back edge
    // closes a loop.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let waits: Vec<bool> = def.steps.iter().map(Step::waits).collect();
    let mut marks = vec![Mark::New; def.steps.len()];
    let mut path = Vec::new();
    fn visit(
        at: usize,
        edges: &[Vec<usize>],
        waits: &[bool],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        marks[at] = Mark::Open;
        path.push(at);
        for &next in &edges[at] {
            if waits[next] {
                continue;
            }
            match marks[next] {
                Mark::Open => {
                    let start = path.iter().position(|&p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, edges, waits, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[at] = Mark::Done;
        None
    }
    for start in 0..def.steps.len() {
        if !waits[start]
            && marks[start] == Mark::New
            && let Some(cycle) = visit(start, edges, &waits, &mut marks, &mut path)
        {
            return Some(
                cycle
                    .into_iter()
                    .map(|i| format!("`{}`", def.steps[i].id()))
                    .collect(),
            );
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            channel_bindings: ["email".to_owned()].into(),
            segments: ["b2b".to_owned()].into(),
        }
    }

    fn problems(json: &str) -> Vec<String> {
        let def = JourneyDef::from_json(json.as_bytes()).unwrap();
        validate(&def, &known()).err().unwrap_or_default()
    }

    const SEND: &str = r#""type":"send","binding":"email","template":{"subject":"Hi","text":"Hallo {{ contact.email }}"}"#;

    #[test]
    fn a_sound_journey_passes() {
        let json = format!(
            r#"{{"name":"welcome","trigger":{{"event":{{"kind":"signup"}}}},"steps":[
                {{"id":"hello",{SEND}}},
                {{"id":"wait","type":"wait","duration":"2d"}},
                {{"id":"b2b?","type":"branch","condition":{{"in_segment":"b2b"}},"then":"again","else":"done"}},
                {{"id":"again",{SEND},"next":"wait"}},
                {{"id":"done","type":"exit"}}]}}"#
        );
        assert_eq!(problems(&json), Vec::<String>::new());
    }

    #[test]
    fn each_mistake_is_named() {
        let json = format!(
            r#"{{"name":"Bad Name","trigger":{{"segment_entered":"nope"}},"steps":[
                {{"id":"a",{SEND},"next":"ghost"}},
                {{"id":"b","type":"send","binding":"sms","template":{{"text":"{{{{ broken"}}}},
                {{"id":"a","type":"exit"}}]}}"#
        );
        let found = problems(&json);
        let all = found.join("\n");
        assert!(all.contains("name `Bad Name`"), "{all}");
        assert!(all.contains("unknown segment `nope`"), "{all}");
        assert!(all.contains("unknown step target `ghost`"), "{all}");
        assert!(all.contains("missing binding `sms`"), "{all}");
        assert!(all.contains("text template does not parse"), "{all}");
        assert!(all.contains("`a` is used twice"), "{all}");
    }

    #[test]
    fn unreachable_steps_and_busy_loops_are_refused() {
        let json = format!(
            r#"{{"name":"loop","trigger":"manual","steps":[
                {{"id":"a",{SEND}}},
                {{"id":"b","type":"branch","condition":{{"score_at_least":5}},"then":"a","else":"end"}},
                {{"id":"end","type":"exit"}},
                {{"id":"orphan","type":"exit"}}]}}"#
        );
        let all = problems(&json).join("\n");
        assert!(all.contains("step `orphan` is unreachable"), "{all}");
        assert!(
            all.contains("`a` → `b` → `a` form a loop without a wait"),
            "{all}"
        );
    }
}
