//! The media port range rule (`media.port_min..=media.port_max`), in one place: config
//! validation reports every [`PortRangeProblem`] of [`problems`], and the relay's port pool
//! (`media::ports::PortRange`) takes its pairs from [`pairs`]. PURE.
//!
//! A pair is an even RTP port and the odd port above it for RTCP (RFC 3550 §11).

use std::fmt;

/// Why a configured port range is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRangeProblem {
    /// `port_min > port_max`.
    Reversed { min: u16, max: u16 },
    /// `port_min` is 0, which no socket can be bound to on purpose.
    Zero,
    /// Fewer than two ports: no RTP/RTCP pair fits.
    Empty { min: u16, max: u16 },
    /// An odd number of ports: the last one can never be used.
    OddSize { min: u16, max: u16, size: u32 },
    /// `port_min` is odd: RTP would start on an RTCP port.
    OddMin { min: u16 },
}

impl PortRangeProblem {
    /// The config key the problem is reported under.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Reversed { .. } | Self::Zero | Self::OddMin { .. } => "media.port_min",
            Self::Empty { .. } | Self::OddSize { .. } => "media.port_max",
        }
    }
}

impl fmt::Display for PortRangeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reversed { min, max } => {
                write!(f, "port range is reversed: port_min {min} > port_max {max}")
            }
            Self::Zero => f.write_str("port 0 cannot be used for media"),
            Self::Empty { min, max } => write!(
                f,
                "port range {min}-{max} is empty: a stream needs an RTP/RTCP pair"
            ),
            Self::OddSize { min, max, size } => write!(
                f,
                "port range {min}-{max} holds an odd number of ports ({size}): ports are used \
                 in RTP/RTCP pairs (RFC 3550 §11)"
            ),
            Self::OddMin { min } => write!(
                f,
                "port_min {min} is odd: RTP uses the even port of each pair (RFC 3550 §11)"
            ),
        }
    }
}

/// Every problem of `min..=max`, for `check-config` and start-up validation.
pub fn problems(min: u16, max: u16) -> Vec<PortRangeProblem> {
    if min > max {
        return vec![PortRangeProblem::Reversed { min, max }];
    }
    let mut out = Vec::new();
    let size = u32::from(max) - u32::from(min) + 1;
    if min == 0 {
        out.push(PortRangeProblem::Zero);
    }
    if size < 2 {
        out.push(PortRangeProblem::Empty { min, max });
    } else if size % 2 != 0 {
        out.push(PortRangeProblem::OddSize { min, max, size });
    }
    if min % 2 != 0 {
        out.push(PortRangeProblem::OddMin { min });
    }
    out
}

/// The RTP/RTCP pairs inside `min..=max`: (first even port, number of pairs). A range that
/// validation refuses only for its parity still yields the pairs it holds; one that holds
/// none (or starts at 0, or is reversed) is refused with its first problem.
pub fn pairs(min: u16, max: u16) -> Result<(u16, usize), PortRangeProblem> {
    if let Some(p) = problems(min, max).into_iter().find(|p| {
        matches!(
            p,
            PortRangeProblem::Reversed { .. } | PortRangeProblem::Zero
        )
    }) {
        return Err(p);
    }
    let first = u32::from(min) + u32::from(min) % 2;
    let max32 = u32::from(max);
    if first + 1 > max32 {
        return Err(PortRangeProblem::Empty { min, max });
    }
    let count = (max32 - first).div_ceil(2) as usize;
    // `first` <= max <= u16::MAX here (first + 1 <= max).
    let first = u16::try_from(first).map_err(|_| PortRangeProblem::Empty { min, max })?;
    Ok((first, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_range_has_no_problem_and_its_pairs() {
        assert!(problems(30000, 39999).is_empty());
        assert_eq!(pairs(30000, 39999), Ok((30000, 5000)));
        assert_eq!(pairs(65534, 65535), Ok((65534, 1)));
    }

    #[test]
    fn each_problem_is_reported() {
        assert_eq!(
            problems(40000, 30000),
            vec![PortRangeProblem::Reversed {
                min: 40000,
                max: 30000
            }]
        );
        assert!(problems(0, 9).contains(&PortRangeProblem::Zero));
        assert!(problems(30000, 30000).contains(&PortRangeProblem::Empty {
            min: 30000,
            max: 30000
        }));
        assert!(problems(30000, 30002).contains(&PortRangeProblem::OddSize {
            min: 30000,
            max: 30002,
            size: 3
        }));
        assert!(problems(30001, 30002).contains(&PortRangeProblem::OddMin { min: 30001 }));
    }

    #[test]
    fn pairs_refuses_what_holds_no_pair() {
        assert!(pairs(0, 10).is_err());
        assert!(pairs(30001, 30002).is_err());
        assert!(pairs(40000, 30000).is_err());
        assert_eq!(pairs(30001, 30005), Ok((30002, 2)));
    }

    proptest::proptest! {
        #[test]
        fn pairs_stay_inside_the_range(min in 0u16.., max in 0u16..) {
            if let Ok((first, count)) = pairs(min, max) {
                proptest::prop_assert!(first >= min && first % 2 == 0 && min > 0);
                let last_rtcp = u32::from(first) + 2 * count as u32 - 1;
                proptest::prop_assert!(last_rtcp <= u32::from(max));
            }
        }
    }
}
