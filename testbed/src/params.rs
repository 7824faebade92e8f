//! Link parameters (delay, jitter, loss, rate, queue, up/down) and their text form.
//!
//! The text form is shared by topology files and the `link` command:
//! `delay=20ms jitter=2ms loss=1% rate=20mbit queue=100ms down`.

use std::fmt;
use std::time::Duration;

/// What an emulated link does to the frames of one direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay added to every frame.
    pub delay: Duration,
    /// Each frame's delay varies uniformly within `delay ± jitter` (never below zero).
    /// Frames are never reordered: a frame leaves no earlier than the one before it.
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a frame is dropped.
    pub loss: f64,
    /// Bottleneck rate in bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// How much backlog the bottleneck queue holds, as time at `rate_bps`, before it drops
    /// arriving frames (tail drop). Ignored without a rate.
    pub queue: Duration,
    /// `false` is an outage: every frame is dropped, including those in flight.
    pub up: bool,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue: Duration::from_millis(100),
            up: true,
        }
    }
}

/// The parameters of both directions of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkSpec {
    /// From the node (router, proxy, internet host) towards the core or the mesh.
    pub upstream: LinkParams,
    /// Towards the node.
    pub downstream: LinkParams,
}

impl LinkSpec {
    /// The same parameters both ways.
    pub fn both(params: LinkParams) -> LinkSpec {
        LinkSpec {
            upstream: params,
            downstream: params,
        }
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.upstream == self.downstream {
            write!(f, "{}", self.upstream)
        } else {
            write!(
                f,
                "upstream {} / downstream {}",
                self.upstream, self.downstream
            )
        }
    }
}

impl LinkParams {
    /// Applies `key=value` settings (and the bare words `up`/`down`) to `self`.
    ///
    /// Keys: `delay`, `jitter`, `queue` (durations such as `20ms`, `1.5ms`, `300us`, `1s`),
    /// `loss` (`1%` or `0.01`), `rate` (`20mbit`, `512kbit`, `1gbit`, `100000bit`, or
    /// `0`/`unlimited`).
    pub fn apply<'a>(&mut self, settings: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        for setting in settings {
            match setting {
                "up" => self.up = true,
                "down" => self.up = false,
                _ => {
                    let (key, value) = setting.split_once('=').ok_or_else(|| {
                        format!("`{setting}`: expected key=value, `up` or `down`")
                    })?;
                    self.set(key, value)?;
                }
            }
        }
        Ok(())
    }

    /// Sets one parameter from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let bad = |why: String| format!("`{key}`: {why}");
        match key {
            "delay" => self.delay = parse_duration(value).map_err(bad)?,
            "jitter" => self.jitter = parse_duration(value).map_err(bad)?,
            "queue" => self.queue = parse_duration(value).map_err(bad)?,
            "loss" => self.loss = parse_loss(value).map_err(bad)?,
            "rate" => self.rate_bps = parse_rate(value).map_err(bad)?,
            _ => {
                return Err(format!(
                    "unknown link parameter `{key}` (known: delay, jitter, loss, rate, queue, up, down)"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for LinkParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={} jitter={} loss={}% rate={} queue={} {}",
            format_duration(self.delay),
            format_duration(self.jitter),
            self.loss * 100.0,
            match self.rate_bps {
                None => "unlimited".to_string(),
                Some(bps) => format_rate(bps),
            },
            format_duration(self.queue),
            if self.up { "up" } else { "down" }
        )
    }
}

/// Parses `20ms`, `1.5ms`, `300us`, `2s`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use us, ms or s)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by a unit"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use us, ms or s)")),
    };
    let seconds = number * scale;
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range (0 to 3600 s)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `1%`, `0.5%` or a fraction such as `0.01`.
pub fn parse_loss(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a loss rate (e.g. 1% or 0.01)"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{text}` is not between 0% and 100%"));
    }
    Ok(value)
}

/// Parses a rate in tc's units (`kbit`, `mbit`, `gbit`, `bit`); `0`, `unlimited` and `none`
/// mean no limit.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if matches!(text, "0" | "unlimited" | "none") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use bit, kbit, mbit or gbit)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a number followed by a unit"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use bit, kbit, mbit or gbit)"
            ));
        }
    };
    let bps = number * scale;
    if !(1000.0..=100e9).contains(&bps) {
        return Err(format!("`{text}` is out of range (1kbit to 100gbit)"));
    }
    Ok(Some(bps as u64))
}

fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn format_rate(bps: u64) -> String {
    if bps % 1_000_000 == 0 {
        format!("{}mbit", bps / 1_000_000)
    } else if bps % 1000 == 0 {
        format!("{}kbit", bps / 1000)
    } else {
        format!("{bps}bit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings() {
        let mut p = LinkParams::default();
        p.apply([
            "delay=20ms",
            "jitter=1.5ms",
            "loss=10%",
            "rate=20mbit",
            "down",
        ])
        .unwrap();
        assert_eq!(p.delay, Duration::from_millis(20));
        assert_eq!(p.jitter, Duration::from_micros(1500));
        assert!((p.loss - 0.1).abs() < 1e-12);
        assert_eq!(p.rate_bps, Some(20_000_000));
        assert!(!p.up);
        p.apply(["up", "rate=unlimited", "loss=0.5"]).unwrap();
        assert!(p.up);
        assert_eq!(p.rate_bps, None);
        assert_eq!(p.loss, 0.5);
        assert_eq!(
            p.to_string(),
            "delay=20ms jitter=1500us loss=50% rate=unlimited queue=100ms up"
        );
    }

    #[test]
    fn rejects_bad_settings_with_reason() {
        let mut p = LinkParams::default();
        let err = p.apply(["delay=20"]).unwrap_err();
        assert!(err.contains("delay") && err.contains("no unit"), "{err}");
        let err = p.apply(["loss=150%"]).unwrap_err();
        assert!(err.contains("between"), "{err}");
        let err = p.apply(["rate=20mbps"]).unwrap_err();
        assert!(err.contains("unknown unit"), "{err}");
        let err = p.apply(["colour=blue"]).unwrap_err();
        assert!(err.contains("unknown link parameter"), "{err}");
        let err = p.apply(["sideways"]).unwrap_err();
        assert!(err.contains("key=value"), "{err}");
    }
}
