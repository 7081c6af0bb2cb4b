//! Batch items written into a guest by hand.
//!
//! wasmtime's derived lowering writes a record field by field, and each
//! write looks the instance's memory up again: about a tenth of a batch's
//! time under `perf`. The views in `views.rs` also need two vectors per
//! item (the attributes, the activity). Here an item is written from the host's
//! records: each record is filled in a buffer on the stack and copied into
//! the guest once. Strings and lists still get one call of the guest's
//! `realloc` each, as the canonical ABI asks, so a guest that frees its
//! inputs one by one keeps working.
//!
//! The layout comes from the derived records' ABI (`RuleInputRecord`,
//! `ScorerInputRecord` and what they hold), and `typecheck` has matched
//! those against the component's own types (names, order and types of
//! every field and case) before any call, so the bytes written here are
//! the ones the guest expects. Guests whose strings are not UTF-8 take the
//! derived lowering instead.

use std::mem::MaybeUninit;

use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::{
    ActivityView, ContactView, EventView, FieldView, RuleInput, RuleInputRecord, ScorerInputRecord,
    ScorerItem, ValueView,
};
use crate::model;
use crate::runtime::manifest::ContactParts;

const STRING: CanonicalAbiInfo = <str as ComponentType>::ABI;
const LIST: CanonicalAbiInfo = <[u8] as ComponentType>::ABI;
const U32: CanonicalAbiInfo = <u32 as ComponentType>::ABI;
const S64: CanonicalAbiInfo = <i64 as ComponentType>::ABI;
const OPTION_STRING: CanonicalAbiInfo = <Option<&str> as ComponentType>::ABI;
const OPTION_S64: CanonicalAbiInfo = <Option<i64> as ComponentType>::ABI;

/// `contact`: id, email, phone, timezone, score, stage, attributes,
/// segments, created-at, last-seen-at.
const CONTACT_FIELDS: [CanonicalAbiInfo; 10] = [
    STRING,
    OPTION_STRING,
    OPTION_STRING,
    OPTION_STRING,
    S64,
    STRING,
    LIST,
    LIST,
    S64,
    OPTION_S64,
];
/// `event`: id, contact-id, kind, at, properties.
const EVENT_FIELDS: [CanonicalAbiInfo; 5] = [STRING, STRING, STRING, S64, LIST];
/// `field`: key, value.
const FIELD_FIELDS: [CanonicalAbiInfo; 2] = [STRING, ValueView::ABI];
/// `activity-count`: kind, total, last-24-hours, last-30-days, last-at.
const ACTIVITY_FIELDS: [CanonicalAbiInfo; 5] = [STRING, U32, U32, U32, OPTION_S64];
/// `rule-input`: contact, activity.
const RULE_INPUT_FIELDS: [CanonicalAbiInfo; 2] = [ContactView::ABI, LIST];
/// `scorer-input`: contact, event, activity.
const SCORER_INPUT_FIELDS: [CanonicalAbiInfo; 3] = [ContactView::ABI, EventView::ABI, LIST];

const CONTACT: [usize; 10] = offsets(CONTACT_FIELDS);
const EVENT: [usize; 5] = offsets(EVENT_FIELDS);
const FIELD: [usize; 2] = offsets(FIELD_FIELDS);
const ACTIVITY: [usize; 5] = offsets(ACTIVITY_FIELDS);
const RULE_INPUT: [usize; 2] = offsets(RULE_INPUT_FIELDS);
const SCORER_INPUT: [usize; 3] = offsets(SCORER_INPUT_FIELDS);
const RULE_INPUT_SIZE: usize = size(RULE_INPUT_FIELDS) as usize;
const SCORER_INPUT_SIZE: usize = size(SCORER_INPUT_FIELDS) as usize;

// The field lists above end where the derived records do: a field added to
// a view and not here stops the build.
const _: () = {
    assert!(size(CONTACT_FIELDS) == ContactView::ABI.size32);
    assert!(size(EVENT_FIELDS) == EventView::ABI.size32);
    assert!(size(FIELD_FIELDS) == FieldView::ABI.size32);
    assert!(size(ACTIVITY_FIELDS) == ActivityView::ABI.size32);
    assert!(RULE_INPUT_SIZE == RuleInputRecord::ABI.size32 as usize);
    assert!(SCORER_INPUT_SIZE == ScorerInputRecord::ABI.size32 as usize);
};

const fn align_to(n: u32, align: u32) -> u32 {
    n.div_ceil(align) * align
}

/// Where each field of a record starts: at the next multiple of its
/// alignment after the field before it (canonical ABI).
const fn offsets<const N: usize>(fields: [CanonicalAbiInfo; N]) -> [usize; N] {
    let mut starts = [0; N];
    let mut end = 0;
    let mut i = 0;
    while i < N {
        let start = align_to(end, fields[i].align32);
        starts[i] = start as usize;
        end = start + fields[i].size32;
        i += 1;
    }
    starts
}

/// A record's size: its fields' end, rounded up to its alignment.
const fn size<const N: usize>(fields: [CanonicalAbiInfo; N]) -> u32 {
    let mut end = 0;
    let mut align = 1;
    let mut i = 0;
    while i < N {
        end = align_to(end, fields[i].align32) + fields[i].size32;
        if fields[i].align32 > align {
            align = fields[i].align32;
        }
        i += 1;
    }
    align_to(end, align)
}

/// Where an option's or a variant's payload starts: after its one-byte
/// discriminant (two cases, or seven for `value`), at the payload's
/// alignment.
const fn payload_at(align: u32) -> usize {
    align_to(1, align) as usize
}

const STRING_PAYLOAD: usize = payload_at(STRING.align32);
const S64_PAYLOAD: usize = payload_at(S64.align32);
const VALUE_PAYLOAD: usize = payload_at(ValueView::ABI.align32);

/// Records of a list are filled in a buffer this large before each copy.
const CHUNK: usize = 2048;

fn utf8<T>(cx: &LowerContext<'_, T>) -> bool {
    matches!(cx.options().string_encoding, StringEncoding::Utf8)
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A string's or list's place in the guest: pointer and length.
fn put_pair(out: &mut [u8], at: usize, (ptr, len): (u32, u32)) {
    put(out, at, &ptr.to_le_bytes());
    put(out, at + 4, &len.to_le_bytes());
}

fn length(len: usize) -> wasmtime::Result<u32> {
    u32::try_from(len)
        .ok()
        .filter(|len| *len <= i32::MAX as u32)
        .ok_or_else(|| wasmtime::format_err!("{len} bytes are too many to copy into wasm"))
}

/// A UTF-8 string into the guest's memory.
fn string<T>(cx: &mut LowerContext<'_, T>, s: &str) -> wasmtime::Result<(u32, u32)> {
    let len = length(s.len())?;
    let ptr = cx.realloc(0, 0, 1, s.len())?;
    cx.as_slice_mut()[ptr..][..s.len()].copy_from_slice(s.as_bytes());
    Ok((ptr as u32, len))
}

/// A list into the guest's memory: one allocation for its records, each
/// filled by `write` (which lowers the record's own strings and lists
/// first), copied in chunks.
fn list<'a, T, I: ExactSizeIterator>(
    cx: &mut LowerContext<'a, T>,
    items: I,
    record: CanonicalAbiInfo,
    mut write: impl FnMut(&mut LowerContext<'a, T>, I::Item, &mut [u8]) -> wasmtime::Result<()>,
) -> wasmtime::Result<(u32, u32)> {
    let size = record.size32 as usize;
    let count = items.len();
    let bytes = count
        .checked_mul(size)
        .ok_or_else(|| wasmtime::format_err!("a list of {count} records is too large"))?;
    length(bytes)?;
    let ptr = cx.realloc(0, 0, record.align32, bytes)?;
    let mut chunk = [0u8; CHUNK];
    let (mut filled, mut copied) = (0, 0);
    // `take`: an iterator that said less than it holds cannot write past
    // the allocation.
    for item in items.take(count) {
        if filled + size > CHUNK {
            cx.as_slice_mut()[ptr + copied..][..filled].copy_from_slice(&chunk[..filled]);
            copied += filled;
            filled = 0;
        }
        let out = &mut chunk[filled..filled + size];
        out.fill(0);
        write(cx, item, out)?;
        filled += size;
    }
    cx.as_slice_mut()[ptr + copied..][..filled].copy_from_slice(&chunk[..filled]);
    if copied + filled != bytes {
        wasmtime::bail!("a list said {count} records and held another number");
    }
    Ok((ptr as u32, count as u32))
}

fn strings<T>(cx: &mut LowerContext<'_, T>, items: &[String]) -> wasmtime::Result<(u32, u32)> {
    list(cx, items.iter(), STRING, |cx, s, out| {
        put_pair(out, 0, string(cx, s)?);
        Ok(())
    })
}

fn option_string<T>(
    cx: &mut LowerContext<'_, T>,
    s: Option<&str>,
    out: &mut [u8],
) -> wasmtime::Result<()> {
    if let Some(s) = s {
        out[0] = 1;
        put_pair(out, STRING_PAYLOAD, string(cx, s)?);
    }
    Ok(())
}

fn option_s64(value: Option<i64>, out: &mut [u8]) {
    if let Some(value) = value {
        out[0] = 1;
        put(out, S64_PAYLOAD, &value.to_le_bytes());
    }
}

/// A `value`; the case numbers are the cases' places in the WIT variant.
fn value<T>(
    cx: &mut LowerContext<'_, T>,
    value: &model::Value,
    out: &mut [u8],
) -> wasmtime::Result<()> {
    let at = VALUE_PAYLOAD;
    match value {
        model::Value::Null => out[0] = 0,
        model::Value::Boolean(b) => {
            out[0] = 1;
            out[at] = u8::from(*b);
        }
        model::Value::Integer(i) => {
            out[0] = 2;
            put(out, at, &i.to_le_bytes());
        }
        model::Value::Float(f) => {
            out[0] = 3;
            put(out, at, &f.to_le_bytes());
        }
        model::Value::Text(s) => {
            out[0] = 4;
            put_pair(out, at, string(cx, s)?);
        }
        model::Value::Timestamp(t) => {
            out[0] = 5;
            put(out, at, &t.to_le_bytes());
        }
        model::Value::Texts(items) => {
            out[0] = 6;
            put_pair(out, at, strings(cx, items)?);
        }
    }
    Ok(())
}

fn fields<T>(cx: &mut LowerContext<'_, T>, fields: &model::Fields) -> wasmtime::Result<(u32, u32)> {
    list(cx, fields.iter(), FieldView::ABI, |cx, (key, v), out| {
        put_pair(out, FIELD[0], string(cx, key)?);
        value(cx, v, &mut out[FIELD[1]..])
    })
}

fn activity<T>(
    cx: &mut LowerContext<'_, T>,
    activity: &[model::ActivityCount],
) -> wasmtime::Result<(u32, u32)> {
    list(cx, activity.iter(), ActivityView::ABI, |cx, a, out| {
        let [kind, total, last_24_hours, last_30_days, last_at] = ACTIVITY;
        put_pair(out, kind, string(cx, &a.kind)?);
        put(out, total, &a.total.to_le_bytes());
        put(out, last_24_hours, &a.last_24_hours.to_le_bytes());
        put(out, last_30_days, &a.last_30_days.to_le_bytes());
        option_s64(a.last_at, &mut out[last_at..]);
        Ok(())
    })
}

/// `c` as a plugin that reads `parts` is shown it: the parts it does not
/// read are written empty (`none`, no items).
fn contact<T>(
    cx: &mut LowerContext<'_, T>,
    c: &model::Contact,
    parts: ContactParts,
    out: &mut [u8],
) -> wasmtime::Result<()> {
    let [
        id,
        email,
        phone,
        timezone,
        score,
        stage,
        attributes,
        segments,
        created_at,
        last_seen_at,
    ] = CONTACT;
    let shown = super::shown(c, parts);
    put_pair(out, id, string(cx, &c.id)?);
    option_string(cx, shown.email, &mut out[email..])?;
    option_string(cx, shown.phone, &mut out[phone..])?;
    option_string(cx, c.timezone.as_deref(), &mut out[timezone..])?;
    put(out, score, &c.score.to_le_bytes());
    put_pair(out, stage, string(cx, &c.stage)?);
    put_pair(out, attributes, fields(cx, shown.attributes)?);
    put_pair(out, segments, strings(cx, shown.segments)?);
    put(out, created_at, &c.created_at.to_le_bytes());
    option_s64(c.last_seen_at, &mut out[last_seen_at..]);
    Ok(())
}

fn event<T>(
    cx: &mut LowerContext<'_, T>,
    e: &model::Event,
    out: &mut [u8],
) -> wasmtime::Result<()> {
    let [id, contact_id, kind, at, properties] = EVENT;
    put_pair(out, id, string(cx, &e.id)?);
    put_pair(out, contact_id, string(cx, &e.contact_id)?);
    put_pair(out, kind, string(cx, &e.kind)?);
    put(out, at, &e.at.to_le_bytes());
    put_pair(out, properties, fields(cx, &e.properties)?);
    Ok(())
}

impl RuleInput<'_> {
    fn write<T>(&self, cx: &mut LowerContext<'_, T>, offset: usize) -> wasmtime::Result<()> {
        let mut out = [0u8; RULE_INPUT_SIZE];
        contact(cx, self.contact, self.parts, &mut out[RULE_INPUT[0]..])?;
        let shown = self.parts.activity(self.activity);
        put_pair(&mut out, RULE_INPUT[1], activity(cx, shown)?);
        cx.as_slice_mut()[offset..][..out.len()].copy_from_slice(&out);
        Ok(())
    }
}

impl ScorerItem<'_> {
    fn write<T>(&self, cx: &mut LowerContext<'_, T>, offset: usize) -> wasmtime::Result<()> {
        let mut out = [0u8; SCORER_INPUT_SIZE];
        let input = &self.input;
        contact(cx, input.contact, self.parts, &mut out[SCORER_INPUT[0]..])?;
        event(cx, input.event, &mut out[SCORER_INPUT[1]..])?;
        let shown = self.parts.activity(input.activity);
        put_pair(&mut out, SCORER_INPUT[2], activity(cx, shown)?);
        cx.as_slice_mut()[offset..][..out.len()].copy_from_slice(&out);
        Ok(())
    }
}

/// `ComponentType` and `Lower` for a batch item: its type is its record's,
/// it is written by hand into memory (where a list puts it) and through
/// its record otherwise.
macro_rules! lowered_by_hand {
    ($item:ident, $record:ident) => {
        // The traits are unsafe for their contract, not for any unsafe code
        // (there is none; every write into the guest is bounds-checked): the
        // type, ABI and flat form are the derived record's, and both
        // lowerings below write exactly that record.
        #[allow(unsafe_code)]
        unsafe impl ComponentType for $item<'_> {
            type Lower = <$record<'static> as ComponentType>::Lower;
            const ABI: CanonicalAbiInfo = <$record<'static> as ComponentType>::ABI;

            fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
                <$record<'static> as ComponentType>::typecheck(ty, types)
            }
        }

        #[allow(unsafe_code)]
        unsafe impl Lower for $item<'_> {
            fn linear_lower_to_flat<T>(
                &self,
                cx: &mut LowerContext<'_, T>,
                ty: InterfaceType,
                dst: &mut MaybeUninit<Self::Lower>,
            ) -> wasmtime::Result<()> {
                self.record().linear_lower_to_flat(cx, ty, dst)
            }

            fn linear_lower_to_memory<T>(
                &self,
                cx: &mut LowerContext<'_, T>,
                ty: InterfaceType,
                offset: usize,
            ) -> wasmtime::Result<()> {
                if utf8(cx) {
                    self.write(cx, offset)
                } else {
                    self.record().linear_lower_to_memory(cx, ty, offset)
                }
            }

            fn linear_store_list_to_memory<T>(
                cx: &mut LowerContext<'_, T>,
                ty: InterfaceType,
                mut offset: usize,
                items: &[Self],
            ) -> wasmtime::Result<()> {
                let by_hand = utf8(cx);
                for item in items {
                    if by_hand {
                        item.write(cx, offset)?;
                    } else {
                        item.record().linear_lower_to_memory(cx, ty, offset)?;
                    }
                    offset += Self::SIZE32;
                }
                Ok(())
            }
        }
    };
}

lowered_by_hand!(RuleInput, RuleInputRecord);
lowered_by_hand!(ScorerItem, ScorerInputRecord);
