//! Unit tests of the store address allow-list and the checked resolver.

use super::*;

fn allowed(entries: &[&str]) -> AllowedAddresses {
    AllowedAddresses::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn default_allows_public_and_private_but_not_this_host_or_metadata() {
    let a = allowed(&[]);
    for ok in [
        "https://vault.example.com:8200",
        "https://8.8.8.8",
        "http://10.0.0.5:8200",
        "http://[2001:db8::1]",
    ] {
        assert!(a.check(ok).is_ok(), "{ok}");
    }
    for refused in [
        "http://169.254.169.254",
        "http://169.254.170.23/v1/credentials",
        "http://[fe80::1]:8200",
        "http://127.0.0.1:8200",
        "http://127.1:8200",
        "http://2130706433",
        "http://[::1]",
        "http://[::ffff:127.0.0.1]",
        "http://[::ffff:169.254.169.254]",
        "http://0.0.0.0",
        "http://[::]",
        "http://[fd00:ec2::254]",
        "http://224.0.0.1",
    ] {
        assert!(
            matches!(a.check(refused), Err(AddressError::Refused { .. })),
            "{refused}: {:?}",
            a.check(refused)
        );
    }
    assert!(matches!(
        a.check("unix:///var/run/vault.sock"),
        Err(AddressError::Socket(_))
    ));
    assert!(matches!(
        a.check("ftp://x"),
        Err(AddressError::Malformed(_))
    ));
}

#[test]
fn listed_entries_and_nothing_else() {
    let a = allowed(&[
        "127.0.0.1",
        "10.0.0.0/8",
        "vault.example.com",
        "*.corp.example",
        "unix:///run/vault/agent.sock",
    ]);
    assert_eq!(a.check("http://127.0.0.1:8200"), Ok(Reach::Listed));
    assert_eq!(a.check("http://10.9.8.7"), Ok(Reach::Listed));
    assert!(
        a.check("http://8.8.8.8").is_err(),
        "public is off once listed"
    );
    assert!(a.check("http://127.0.0.2").is_err());
    assert_eq!(a.check("https://VAULT.example.com"), Ok(Reach::Listed));
    assert_eq!(a.check("https://a.corp.example"), Ok(Reach::Listed));
    assert_eq!(a.check("https://corp.example"), Ok(Reach::Resolve));
    assert_eq!(a.check("https://xcorp.example"), Ok(Reach::Resolve));
    assert_eq!(a.check("unix:///run/vault/agent.sock"), Ok(Reach::Listed));
    assert!(a.check("unix:///run/vault/../vault/agent.sock").is_err());
    let b = allowed(&["public", "127.0.0.1"]);
    assert!(b.check("http://8.8.8.8").is_ok());
    assert!(b.check("http://127.0.0.1").is_ok());
    assert!(b.check("http://169.254.169.254").is_err());
    let sockets_only = allowed(&["unix:///run/a.sock"]);
    assert!(sockets_only.check("https://8.8.8.8").is_ok());
    assert!(AllowedAddresses::new(&["10.0.0.0/99".into()]).is_err());
    assert!(AllowedAddresses::new(&["bad host".into()]).is_err());
    assert!(AllowedAddresses::new(&["unix://rel.sock".into()]).is_err());
}

#[tokio::test]
async fn the_resolver_drops_refused_addresses() {
    let r = CheckedResolver::new(Arc::new(allowed(&[])));
    assert!(matches!(
        r.resolve_allowed("localhost").await,
        Err(AddressError::ResolvesRefused { .. })
    ));
    let listed = CheckedResolver::new(Arc::new(allowed(&["localhost"])));
    let addrs = listed.resolve_allowed("localhost").await.unwrap();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    let by_ip = CheckedResolver::new(Arc::new(allowed(&["127.0.0.0/8"])));
    let addrs = by_ip.resolve_allowed("localhost").await.unwrap();
    assert!(
        addrs.iter().all(|a| a.ip().is_ipv4()),
        "::1 is not listed: {addrs:?}"
    );
}
