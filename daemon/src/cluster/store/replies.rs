//! Reading what the scripts answer: levels, limits and waits as Redis gives them back, none of
//! them believed past what the daemon itself would hold.

use super::*;

fn limit(text: &str) -> Option<u64> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (1.0..=MAX_LIMIT as f64).contains(v))
        .map(|v| v as u64)
}

/// A wait the store asked for, in ms: at least 1, at most the longest any daemon believes.
fn wait_ms(text: Option<&String>) -> Duration {
    let ms = text
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(1.0);
    Duration::from_millis(ms.max(1.0) as u64).min(MAX_RATE_LIMIT_WAIT)
}

fn limits(m: &[String]) -> LimitSet {
    LimitSet {
        rpm: m.first().and_then(|t| limit(t)),
        itpm: m.get(1).and_then(|t| limit(t)),
        otpm: m.get(2).and_then(|t| limit(t)),
        max_in_flight: None,
    }
}

/// Reads the take script's answer. Levels and counts are held to sense (finite, within the
/// limit's reach), as everything read from Redis is.
pub fn parse_take(reply: &[String]) -> Result<Taken, StoreError> {
    let number = |i: usize| {
        reply
            .get(i)
            .and_then(|t| t.parse::<f64>().ok())
            .filter(|v| v.is_finite() && v.abs() <= MAX_LIMIT as f64)
    };
    let repaired = reply.last().is_some_and(|t| t == "repaired");
    let answer = match reply.first().map(String::as_str) {
        Some("ok") => {
            let limits = limits(&reply[5.min(reply.len())..]);
            let level = |i: usize, kind: LimitKind| {
                let limit = limits.get(kind)? as f64;
                number(i).filter(|l| l.abs() <= limit)
            };
            ClaimAnswer::Granted {
                taken_before: number(1).filter(|t| *t >= 0.0).unwrap_or(0.0),
                levels: PerKind::new(
                    level(2, LimitKind::Requests),
                    level(3, LimitKind::InputTokens),
                    level(4, LimitKind::OutputTokens),
                ),
                limits,
            }
        }
        Some("wait") => ClaimAnswer::Refused {
            wait: wait_ms(reply.get(1)),
            limits: limits(&reply[2.min(reply.len())..]),
        },
        Some("locked") => ClaimAnswer::LockedOut {
            for_: wait_ms(reply.get(1)),
            reason: text::bounded(reply.get(2).map_or("", String::as_str), MAX_MESSAGE),
        },
        _ => {
            return Err(StoreError::Answer {
                script: "take",
                answer: text::bounded(&format!("{reply:?}"), 200),
            });
        }
    };
    Ok(Taken { answer, repaired })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn absurd_numbers_in_an_answer_are_not_believed() {
        let taken = parse_take(&reply(&[
            "ok", "inf", "-inf", "nan", "1e308", "30", "", "", "repaired",
        ]))
        .unwrap();
        assert!(taken.repaired);
        let ClaimAnswer::Granted {
            taken_before,
            levels,
            limits,
        } = taken.answer
        else {
            panic!()
        };
        assert_eq!(taken_before, 0.0);
        assert_eq!(levels, PerKind::new(None, None, None));
        assert_eq!(limits.rpm, Some(30));
        let waited = parse_take(&reply(&["wait", "1e308", "garbage", "", ""])).unwrap();
        let ClaimAnswer::Refused { wait, limits } = waited.answer else {
            panic!()
        };
        assert_eq!(wait, MAX_RATE_LIMIT_WAIT);
        assert_eq!(limits.rpm, None);
        let locked = parse_take(&reply(&["locked", "3.1e13", &"x".repeat(5000)])).unwrap();
        let ClaimAnswer::LockedOut { for_, reason } = locked.answer else {
            panic!()
        };
        assert_eq!(for_, MAX_RATE_LIMIT_WAIT);
        assert!(reason.len() <= MAX_MESSAGE);
        assert!(parse_take(&reply(&["what"])).is_err());
    }
}
