//! The host's interfaces, for the check that the boot address is really on the
//! boot interface before anything listens.

use std::ffi::CStr;
use std::net::Ipv4Addr;

/// The IPv4 addresses of interface `name`; `None` when the host has no such interface.
pub fn ipv4_addresses(name: &str) -> std::io::Result<Option<Vec<Ipv4Addr>>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (mut found, mut addrs) = (false, Vec::new());
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed;
        // ifa_name is a NUL-terminated string and ifa_addr, when set and of
        // family AF_INET, points at a sockaddr_in.
        unsafe {
            let ifa = &*cur;
            if CStr::from_ptr(ifa.ifa_name).to_bytes() == name.as_bytes() {
                found = true;
                if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    addrs.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found.then_some(addrs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_its_address_and_unknown_interfaces_are_none() {
        let lo = super::ipv4_addresses("lo").unwrap().expect("every Linux host has lo");
        assert!(lo.contains(&std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(super::ipv4_addresses("bs-no-such0").unwrap(), None);
    }
}
