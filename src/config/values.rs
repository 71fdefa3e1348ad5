//! Value types shared by the command line, the environment and the config
//! file, so that `--outbound-limit 1MiB`, `KEFU_OUTBOUND_LIMIT=1MiB` and
//! `outbound_limit_bytes = "1MiB"` are read by the same code.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::LogFormat;

/// A number of bytes, written as a plain integer (`65536`) or with a binary
/// unit: `64KiB`, `1MiB`, `2GiB` (also `k`, `m`, `g`; any case). Decimal
/// units (`KB`, `MB`) are refused rather than guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize`, saturating on (hypothetical) 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{s}` is not a size (write bytes, e.g. `65536`, or `64KiB`, `1MiB`)"
            ));
        }
        let (number, unit) = s.split_at(digits);
        let number: u64 = number.parse().map_err(|_| format!("`{s}` is too large"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}` (use bytes, KiB, MiB or GiB)"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, or a string like \"64KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// The largest CPU number accepted: the kernel's default `CPU_SETSIZE`.
const MAX_CPU: usize = 1023;

/// A list of CPU numbers, written like the kernel's cpulist: `0,2-3,8`.
/// Ranges are inclusive; a CPU may appear only once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// Checks a list: not empty, no CPU twice, each at most 1023.
    pub fn new(cpus: Vec<usize>) -> Result<Self, String> {
        if cpus.is_empty() {
            return Err("the CPU list is empty".into());
        }
        for (i, &cpu) in cpus.iter().enumerate() {
            if cpu > MAX_CPU {
                return Err(format!("CPU {cpu} is out of range (0..={MAX_CPU})"));
            }
            if cpus[..i].contains(&cpu) {
                return Err(format!("CPU {cpu} is listed twice"));
            }
        }
        Ok(CpuList(cpus))
    }

    /// The CPUs, in the order shards are pinned to them.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// The CPUs as a vector.
    pub fn into_vec(self) -> Vec<usize> {
        self.0
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let num = |n: &str| {
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{part}` is not a CPU number or range like `2-5`"))
            };
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (num(lo)?, num(hi)?);
                    if lo > hi {
                        return Err(format!("range `{part}` goes backwards"));
                    }
                    if hi > MAX_CPU {
                        return Err(format!("CPU {hi} is out of range (0..={MAX_CPU})"));
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(num(part)?),
            }
        }
        CpuList::new(cpus)
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cpu) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CpuList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU list like \"0,2-3\" or an array of CPU numbers")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CpuList, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CpuList, A::Error> {
                let mut cpus = Vec::new();
                while let Some(cpu) = seq.next_element::<usize>()? {
                    cpus.push(cpu);
                }
                CpuList::new(cpus).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not a log format (text or json)")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Parses a duration the way every source writes it: `500ms`, `30s`, `2m`,
/// `24h`, or combined, `1h 30m`. A bare number has no unit and is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}` is not a duration ({e})"))
}

/// Serde helper: an optional duration written as a string (`"30s"`).
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string like \"30s\" or \"500ms\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write it as a string, e.g. \"{v}s\""
            )))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write it as a string, e.g. \"{}ms\"",
                (v * 1000.0).round()
            )))
        }
    }
    d.deserialize_any(V).map(Some)
}

/// The CPUs this process may run on (its affinity mask), in ascending
/// order, or `None` when the kernel does not say.
#[cfg(target_os = "linux")]
pub(crate) fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: `set` is a plain bit mask, zero is a valid value, and the
    // kernel writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect();
        (!cpus.is_empty()).then_some(cpus)
    }
}

/// The CPUs this process may run on: unknown off Linux.
#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

/// The default shard count: every CPU the process may run on.
pub(crate) fn default_shards() -> usize {
    allowed_cpus()
        .map(|cpus| cpus.len())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!("65536".parse(), Ok(ByteSize(65536)));
        assert_eq!("64KiB".parse(), Ok(ByteSize(65536)));
        assert_eq!("64k".parse(), Ok(ByteSize(65536)));
        assert_eq!(" 1 MiB ".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!("2gib".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("0".parse(), Ok(ByteSize(0)));
        assert!("64KB"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("unknown size unit"));
        assert!("".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("x1".parse::<ByteSize>().is_err());
        assert!("99999999999999999999".parse::<ByteSize>().is_err());
        assert!("17179869184GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn cpu_lists() {
        let l: CpuList = "0,2-3".parse().unwrap();
        assert_eq!(l.as_slice(), &[0, 2, 3]);
        assert_eq!(l.to_string(), "0,2,3");
        assert_eq!("5".parse::<CpuList>().unwrap().as_slice(), &[5]);
        assert_eq!(
            " 1 , 4 - 5 ".parse::<CpuList>().unwrap().as_slice(),
            &[1, 4, 5]
        );
        assert!("".parse::<CpuList>().is_err());
        assert!("0,".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().unwrap_err().contains("backwards"));
        assert!("0,0".parse::<CpuList>().unwrap_err().contains("twice"));
        assert!("1-3,2".parse::<CpuList>().unwrap_err().contains("twice"));
        assert!("a".parse::<CpuList>().is_err());
        assert!("0-5000"
            .parse::<CpuList>()
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn log_formats() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn default_shards_is_at_least_one() {
        assert!(default_shards() >= 1);
    }
}
