//! The messages of a batch broadcast: read without copying, stopped at the batch limit,
//! validated field by field as Supabase's changeset does, and reported in a small fixed
//! record per message, so a request costs memory linear in its body and no more.

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use serde_json::value::RawValue;

/// One message of a batch, before validation: every field optional, so that what is missing
/// can be reported field by field, as Supabase's changeset does. Fields stay raw JSON: nothing
/// of a message is copied or built into a tree before it is known to be needed.
#[derive(serde::Deserialize)]
pub(super) struct RawMessage<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    private: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// A batch request's body, its `messages` still raw.
#[derive(serde::Deserialize)]
pub(super) struct RawBatch<'a> {
    #[serde(borrow, default)]
    pub(super) messages: Option<&'a RawValue>,
}

/// A valid message of a batch.
pub(super) struct Message<'a> {
    pub(super) topic: String,
    pub(super) event: String,
    pub(super) payload: &'a str,
    pub(super) private: bool,
    pub(super) id: String,
}

pub(super) const BLANK: &str = "can't be blank";
pub(super) const INVALID: &str = "is invalid";
pub(super) const TOO_BIG: &str = "Payload size exceeds tenant limit";

/// The invalid messages a 422 reports at most; validation stops at the next one. Each report
/// is a few static strings, so an answer stays small whatever the batch limit is.
pub(super) const MAX_REPORTED_ERRORS: usize = 100;

/// What is wrong with one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Problem {
    Blank,
    Invalid,
    TooBig,
    /// Longer than the topic limit, in bytes.
    TooLong(usize),
}

impl Problem {
    fn text(self) -> Cow<'static, str> {
        match self {
            Problem::Blank => BLANK.into(),
            Problem::Invalid => INVALID.into(),
            Problem::TooBig => TOO_BIG.into(),
            Problem::TooLong(max) => topic_too_long(max).into(),
        }
    }
}

/// The changeset message of a topic over the limit, as Ecto's `validate_length` words it.
pub(super) fn topic_too_long(max: usize) -> String {
    format!("should be at most {max} byte(s)")
}

/// The problems of one message, field by field (a fixed, small record: no maps, no trees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Problems {
    topic: Option<Problem>,
    event: Option<Problem>,
    pub(super) payload: Option<Problem>,
    private: Option<Problem>,
    id: Option<Problem>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        *self == Problems::default()
    }

    /// Supabase's `{field: [reason]}`, `{}` for a valid message.
    #[cfg(test)]
    fn to_json(self) -> Value {
        let mut out = String::new();
        self.write_json(&mut out);
        serde_json::from_str(&out).expect("valid JSON")
    }

    /// Appends Supabase's `{field: [reason]}` (`{}` for a valid message) to `out`.
    fn write_json(&self, out: &mut String) {
        out.push('{');
        let mut first = true;
        for (name, problem) in [
            ("topic", self.topic),
            ("event", self.event),
            ("payload", self.payload),
            ("private", self.private),
            ("id", self.id),
        ] {
            if let Some(p) = problem {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push('"');
                out.push_str(name);
                out.push_str("\":[");
                out.push_str(&Value::String(p.text().into_owned()).to_string());
                out.push(']');
            }
        }
        out.push('}');
    }
}

/// The invalid messages of a refused batch, by position.
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// `(index, problems)` of each invalid message, in order; at most
    /// [`MAX_REPORTED_ERRORS`].
    invalid: Vec<(usize, Problems)>,
}

impl Reports {
    /// Whether some message went over the payload limit.
    pub(super) fn payload_too_big(&self) -> bool {
        self.invalid
            .iter()
            .any(|(_, p)| p.payload == Some(Problem::TooBig))
    }

    /// The 422 body: `{"errors":{"messages":[...]}}`, one object per message up to the last
    /// invalid one reported (`{}` for the valid ones between). Written straight into a string:
    /// three bytes per valid message, never a tree.
    pub(super) fn body(&self) -> String {
        let last = self.invalid.last().map_or(0, |(i, _)| i + 1);
        let mut out = String::with_capacity(32 + 3 * last + 64 * self.invalid.len());
        out.push_str("{\"errors\":{\"messages\":[");
        let mut next = self.invalid.iter().peekable();
        for i in 0..last {
            if i > 0 {
                out.push(',');
            }
            match next.peek() {
                Some((at, problems)) if *at == i => {
                    problems.write_json(&mut out);
                    next.next();
                }
                _ => out.push_str("{}"),
            }
        }
        out.push_str("]}}");
        out
    }
}

/// A non-empty string field, decoded without building anything but the string.
fn required_string(raw: Option<&RawValue>) -> Result<String, Problem> {
    match raw.map(RawValue::get) {
        None | Some("null") => Err(Problem::Blank),
        Some(r) if r.starts_with('"') => match serde_json::from_str::<String>(r) {
            Ok(s) if s.trim().is_empty() => Err(Problem::Blank),
            Ok(s) => Ok(s),
            Err(_) => Err(Problem::Invalid),
        },
        Some(_) => Err(Problem::Invalid),
    }
}

/// The limits a batch message is checked against.
#[derive(Clone, Copy)]
pub(super) struct MessageLimits {
    /// The largest payload, in bytes of JSON.
    pub(super) max_payload: usize,
    /// The longest topic, in bytes.
    pub(super) max_topic: usize,
}

/// Checks one message of a batch; the problems go under the field names.
fn validate<'a>(raw: &RawMessage<'a>, limits: MessageLimits) -> Result<Message<'a>, Problems> {
    let mut problems = Problems::default();
    let topic = required_string(raw.topic)
        .and_then(|t| {
            if t.len() > limits.max_topic {
                Err(Problem::TooLong(limits.max_topic))
            } else {
                Ok(t)
            }
        })
        .map_err(|p| problems.topic = Some(p))
        .ok();
    let event = required_string(raw.event)
        .map_err(|p| problems.event = Some(p))
        .ok();
    let payload = match raw.payload.map(RawValue::get) {
        None | Some("null") => Err(Problem::Blank),
        Some(p) if !p.starts_with('{') => Err(Problem::Invalid),
        Some(p) if p.len() > limits.max_payload => Err(Problem::TooBig),
        Some(p) => Ok(p),
    }
    .map_err(|p| problems.payload = Some(p))
    .ok();
    let private = match raw.private.map(RawValue::get) {
        None | Some("null") | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            problems.private = Some(Problem::Invalid);
            false
        }
    };
    let id = match raw.id.map(RawValue::get) {
        None | Some("null") => Some(uuid::Uuid::new_v4().to_string()),
        Some(r) if r.starts_with('"') => serde_json::from_str::<String>(r)
            .ok()
            .and_then(|s| uuid::Uuid::parse_str(&s).ok())
            .map(|u| u.hyphenated().to_string()),
        Some(_) => None,
    };
    if id.is_none() {
        problems.id = Some(Problem::Invalid);
    }
    match (topic, event, payload, id) {
        (Some(topic), Some(event), Some(payload), Some(id)) if problems.is_empty() => Ok(Message {
            topic,
            event,
            payload,
            private,
            id,
        }),
        _ => Err(problems),
    }
}

/// Why a batch is refused.
#[derive(Debug)]
pub(super) enum Refusal {
    /// More messages than the batch limit: reading stopped at the first one over.
    TooMany,
    /// `messages` is not a list of objects.
    Shape,
    /// Some messages are invalid (reading stopped at the [`MAX_REPORTED_ERRORS`]th).
    Invalid(Reports),
}

/// Reads and validates the list of messages in one pass, without keeping the raw records:
/// it stops at the first message past `max`, or at the [`MAX_REPORTED_ERRORS`]th invalid
/// one, so a body of a million empty objects costs a bounded walk, not a million records.
pub(super) fn read_batch<'a>(
    raw: &'a RawValue,
    max: usize,
    limits: MessageLimits,
) -> Result<Vec<Message<'a>>, Refusal> {
    /// The outcome, when it is not a list of valid messages (a `Visitor` may only fail
    /// with the deserializer's error type, so the reason travels beside it).
    struct Walk<'c> {
        max: usize,
        limits: MessageLimits,
        stopped: &'c Cell<Option<Refusal>>,
    }
    impl<'de> serde::de::Visitor<'de> for Walk<'_> {
        type Value = Vec<Message<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of messages")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut valid = Vec::new();
            let mut reports = Reports::default();
            let mut seen = 0;
            let stop = |refusal: Refusal| {
                self.stopped.set(Some(refusal));
                serde::de::Error::custom("stopped")
            };
            while let Some(m) = seq.next_element::<RawMessage<'de>>()? {
                if seen == self.max {
                    return Err(stop(Refusal::TooMany));
                }
                match validate(&m, self.limits) {
                    Ok(m) if reports.invalid.is_empty() => valid.push(m),
                    Ok(_) => {}
                    Err(problems) => {
                        // Nothing will be sent: the valid messages need not be kept.
                        valid = Vec::new();
                        reports.invalid.push((seen, problems));
                        if reports.invalid.len() == MAX_REPORTED_ERRORS {
                            return Err(stop(Refusal::Invalid(reports)));
                        }
                    }
                }
                seen += 1;
            }
            if reports.invalid.is_empty() {
                Ok(valid)
            } else {
                Err(stop(Refusal::Invalid(reports)))
            }
        }
    }
    let stopped = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let walk = Walk {
        max,
        limits,
        stopped: &stopped,
    };
    serde::Deserializer::deserialize_seq(&mut de, walk)
        .map_err(|_| stopped.take().unwrap_or(Refusal::Shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: MessageLimits = MessageLimits {
        max_payload: 100,
        max_topic: 8,
    };

    fn raw_messages(text: &str) -> &RawValue {
        let b: RawBatch<'_> = serde_json::from_str(text).unwrap();
        b.messages.unwrap()
    }

    fn messages(text: &str) -> Vec<RawMessage<'_>> {
        serde_json::from_str(raw_messages(text).get()).unwrap()
    }

    fn problems(text: &str, limits: MessageLimits) -> Vec<Value> {
        messages(text)
            .iter()
            .map(|m| validate(m, limits).err().unwrap().to_json())
            .collect()
    }

    #[test]
    fn validation_reports_each_field_as_supabase_does() {
        let errs = problems(
            r#"{"messages":[{"payload":{}},{"topic":"t","event":"e","payload":[1]},{"topic":1,"event":"","payload":null,"private":"yes","id":"nope"},{"topic":"123456789","event":"e","payload":{}}]}"#,
            LIMITS,
        );
        assert_eq!(
            errs,
            vec![
                json!({"topic": [BLANK], "event": [BLANK]}),
                json!({"payload": [INVALID]}),
                json!({"topic": [INVALID], "event": [BLANK], "payload": [BLANK], "private": [INVALID], "id": [INVALID]}),
                json!({"topic": ["should be at most 8 byte(s)"]}),
            ]
        );
    }

    #[test]
    fn a_valid_message_keeps_its_id_or_gets_one() {
        let m = messages(
            r#"{"messages":[{"topic":"t","event":"e","payload":{"a":1},"private":true,"id":"6F9619FF-8B86-D011-B42D-00CF4FC964FF"},{"topic":"12345678","event":"e","payload":{}}]}"#,
        );
        let first = validate(&m[0], LIMITS).ok().unwrap();
        assert_eq!(
            (first.private, first.id.as_str(), first.payload),
            (true, "6f9619ff-8b86-d011-b42d-00cf4fc964ff", r#"{"a":1}"#)
        );
        let second = validate(&m[1], LIMITS).ok().unwrap();
        assert!(uuid::Uuid::parse_str(&second.id).is_ok());
        assert_eq!((second.private, second.topic.as_str()), (false, "12345678"));
    }

    #[test]
    fn the_payload_limit_is_in_bytes_of_json() {
        let m =
            messages(r#"{"messages":[{"topic":"t","event":"e","payload":{"k":"0123456789"}}]}"#);
        let limit = |max_payload| MessageLimits {
            max_payload,
            ..LIMITS
        };
        assert!(validate(&m[0], limit(18)).is_ok());
        assert_eq!(
            validate(&m[0], limit(17)).err().unwrap().to_json(),
            json!({"payload": [TOO_BIG]})
        );
    }

    #[test]
    fn reading_stops_at_the_first_message_over_the_limit() {
        let ok = r#"{"topic":"t","event":"e","payload":{}}"#;
        let text = format!(r#"{{"messages":[{ok},{ok},{ok}]}}"#);
        let raw = raw_messages(&text);
        assert_eq!(read_batch(raw, 3, LIMITS).ok().map(|m| m.len()), Some(3));
        assert!(matches!(read_batch(raw, 2, LIMITS), Err(Refusal::TooMany)));
        for shape in [
            r#"{"a":1}"#,
            "[1]",
            r#""x""#,
            r#"[{"topic":"a","topic":"b"}]"#,
        ] {
            let raw: &RawValue = serde_json::from_str(shape).unwrap();
            assert!(
                matches!(read_batch(raw, 5, LIMITS), Err(Refusal::Shape)),
                "{shape}"
            );
        }
    }

    #[test]
    fn reports_stop_after_the_bounded_number_of_invalid_messages() {
        let mut text = String::from(r#"{"messages":[{"topic":"t","event":"e","payload":{}}"#);
        for _ in 0..MAX_REPORTED_ERRORS + 50 {
            text.push_str(",{}");
        }
        text.push_str("]}");
        let Err(Refusal::Invalid(reports)) = read_batch(raw_messages(&text), 1000, LIMITS) else {
            panic!("refused as invalid")
        };
        let body: Value = serde_json::from_str(&reports.body()).unwrap();
        let list = body["errors"]["messages"].as_array().unwrap();
        assert_eq!(list.len(), 1 + MAX_REPORTED_ERRORS);
        assert_eq!(list[0], json!({}), "the valid message gets an empty object");
        assert!(
            list[1..]
                .iter()
                .all(|p| *p == json!({"topic": [BLANK], "event": [BLANK], "payload": [BLANK]}))
        );
        // A few invalid messages are all reported, with valid ones between as empty objects.
        let text = r#"{"messages":[{},{"topic":"t","event":"e","payload":{}},{"event":"e","topic":"t","payload":{"x":1},"id":7},{"topic":"t","event":"e","payload":{}}]}"#;
        let Err(Refusal::Invalid(reports)) = read_batch(raw_messages(text), 1000, LIMITS) else {
            panic!("refused as invalid")
        };
        let body: Value = serde_json::from_str(&reports.body()).unwrap();
        assert_eq!(
            body,
            json!({"errors": {"messages": [{"topic": [BLANK], "event": [BLANK], "payload": [BLANK]}, {}, {"id": [INVALID]}]}})
        );
    }
}
