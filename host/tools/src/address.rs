//! Which addresses a tool's HTTP request may reach before any policy is
//! asked.
//!
//! A permitted host name can resolve to anything, including loopback or a
//! cloud metadata address. So the runtime resolves the name once, refuses
//! the address classes below unless an operator allowed a range for that
//! host ([`InternalNetworks`]), puts the address to the policy with the
//! name, and connects to exactly that address.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range, `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// A range that is not `ADDR/BITS`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an address range: write ADDRESS/BITS, e.g. 10.0.0.0/8 or fd00::/8")]
pub struct BadCidr(pub String);

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let (addr, bits) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if bits > max {
            return Err(bad());
        }
        Ok(Cidr { addr, bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 form).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rest)) == 0
}

/// An IPv6 address that only carries an IPv4 one (mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) is judged as that IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // Local-use NAT64 (RFC 8215) may carry the IPv4 address anywhere in
        // its prefix's layout: judged as unspecified, which is refused.
        [0x64, 0xff9b, 1, ..] => Some(Ipv4Addr::UNSPECIFIED),
        // 6to4 carries its IPv4 address in the second and third segments.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Why an address is not reached by default, or `None` for a public one.
pub fn internal_class(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4 == Ipv4Addr::new(169, 254, 169, 254)
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
            {
                Some("cloud metadata")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("multicast, broadcast or reserved")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 || o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("reserved for protocols or benchmarks")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if s == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254] {
                Some("cloud metadata")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("unique-local")
            } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
                Some("link-local")
            } else if (s[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 {
                // IPv4-compatible and other embedded forms not caught above.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// The addresses of this host's own interfaces: a service listening on
/// all of them is as internal as one on loopback, whatever its address
/// class.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which freeifaddrs frees below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is an element of the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// Ranges an operator opened to named hosts: an internal API that really
/// is wanted. Empty by default: every internal address is refused.
#[derive(Debug, Clone, Default)]
pub struct InternalNetworks {
    grants: Vec<(BTreeSet<String>, Vec<Cidr>)>,
}

impl InternalNetworks {
    /// `ranges` may be reached by requests to any of `hosts` (lowercased
    /// names or IP literals, as policies see them).
    pub fn allow(mut self, hosts: impl IntoIterator<Item = String>, ranges: Vec<Cidr>) -> Self {
        let hosts = hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        self.grants.push((hosts, ranges));
        self
    }

    /// Whether a request to `host` may reach the internal address `ip`.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        self.grants
            .iter()
            .any(|(hosts, ranges)| hosts.contains(host) && ranges.iter().any(|r| r.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        internal_class(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_named_in_every_form() {
        for (addr, want) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:7f00:1::", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("169.254.169.254", "cloud metadata"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fd12::1", "unique-local"),
            ("ff02::1", "multicast"),
            ("224.0.0.1", "multicast, broadcast or reserved"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::127.0.0.1", "reserved"),
            ("64:ff9b:1::a00:1", "unspecified"),
        ] {
            assert_eq!(class(addr), Some(want), "{addr}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::",
            "8.8.8.8",
            "172.32.0.1",
        ] {
            assert_eq!(class(public), None, "{public}");
        }
    }

    #[test]
    fn this_hosts_own_addresses_are_listed() {
        let own = local_addresses();
        assert!(own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{own:?}");
    }

    #[test]
    fn ranges_parse_and_contain() {
        let r: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(r.contains("10.200.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!r.contains("11.0.0.1".parse().unwrap()));
        let r: Cidr = "fd00::/9".parse().unwrap();
        assert!(r.contains("fd7f::1".parse().unwrap()));
        assert!(!r.contains("fd80::1".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let nets = InternalNetworks::default().allow(
            ["Intranet.example".to_string()],
            vec!["10.0.0.0/8".parse().unwrap()],
        );
        assert!(nets.allows("intranet.example", "10.1.1.1".parse().unwrap()));
        assert!(!nets.allows("other.example", "10.1.1.1".parse().unwrap()));
        assert!(!nets.allows("intranet.example", "127.0.0.1".parse().unwrap()));
    }
}
