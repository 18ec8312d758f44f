"""The catalog of deferral causes (E01..E38 of postfix-deferrals.md §3), in pfdiag's own words.

Each Cause says what a deferral means for the admin who has to act on it, which commands
confirm it, and which changes fix it. Commands use placeholders the report fills in:
<domain> recipient domain, <host>/<addr>/<port> the next hop from the log, <rcpt> recipient,
<queue-id>, <sender-domain>, <egress-ip> the address Postfix sends from, <mx-host> an MX name.

Families follow the reference's sections: connection, dns, tls, sasl, reply (what a remote
server answered), routing (configuration and local infrastructure), local (local delivery),
lifetime (end of a message's life), unknown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cause:
    id: str  # "E01".."E38" or "unclassified"
    slug: str
    title: str
    family: str
    meaning: str  # 2-4 sentences: what happened, what it usually means
    checks: tuple[str, ...]  # commands that confirm or rule it out
    fixes: tuple[str, ...]  # main.cf lines, postconf -e commands, whom to contact
    root: bool = True  # False: a consequence of another cause (E11)
    likely_causes: tuple[str, ...] = ()  # distinct underlying causes, most likely first, each with how to confirm


_SLOW_TRANSPORT = (
    "Give the destination its own gentler transport: add to master.cf "
    "'slow unix - - n - - smtp', then "
    "postconf -e 'transport_maps = hash:/etc/postfix/transport' 'slow_destination_concurrency_limit = 2' "
    "'slow_destination_rate_delay = 1s' 'slow_destination_concurrency_failed_cohort_limit = 10'; "
    "add '<domain> slow:' to /etc/postfix/transport; postmap /etc/postfix/transport; postfix reload"
)

_CATALOG: tuple[Cause, ...] = (
    # ---- A. connection level -------------------------------------------------------------
    Cause(
        "E01", "connect-timeout", "Connection to the receiving server timed out", "connection",
        "Postfix knocked on every address it tried for this destination and none answered within "
        "smtp_connect_timeout. When many unrelated domains fail like this at the same time, the block is "
        "on your side: the ISP, cloud provider or your own firewall drops outbound port 25. When only one "
        "destination fails, that server is down, firewalled, or its MX/A records point at a dead address.",
        (
            "postconf -h smtp_connect_timeout smtp_bind_address inet_protocols smtp_address_preference relayhost",
            "dig +short MX <domain>",
            "nc -vz -w 10 <addr> 25   # then the same against a known-good MX, e.g. gmail-smtp-in.l.google.com",
            "nc -vz -w 10 <addr> 587   # 587 open but 25 silent = port 25 filtered on the way",
            "traceroute -T -p 25 -n <addr>",
        ),
        (
            "Outbound 25 blocked by your provider: ask them to open it, or relay through a smarthost: "
            "postconf -e 'relayhost = [smtp.provider.example]:587' 'smtp_sasl_auth_enable = yes' "
            "'smtp_sasl_password_maps = hash:/etc/postfix/sasl_passwd' 'smtp_tls_security_level = encrypt'",
            "Broken IPv6 path: postconf -e 'smtp_address_preference = ipv4' (or 'inet_protocols = ipv4' and restart Postfix)",
            "Only this destination: contact postmaster@<domain> by another route; Postfix keeps retrying by itself",
            "Do not raise smtp_connect_timeout: a server that needs more than 30 s to answer a SYN is not there",
        ),
    ),
    Cause(
        "E02", "connect-refused", "Connection refused by the receiving address", "connection",
        "The address answered the connection attempt with an immediate reset: nothing listens on that port, "
        "or a firewall actively rejects you. For a remote MX it usually means the mail server is down or "
        "restarting. If the address is 127.0.0.1 or a socket, it is your own filter or relay daemon that is "
        "not running (see E32).",
        (
            "nc -vz -w 10 <addr> <port>",
            "dig +short MX <domain>",
            "postconf -h relayhost content_filter transport_maps",
            "ss -ltnp   # when the address is local: is anything listening on <port>?",
        ),
        (
            "Remote server down: wait, or contact postmaster@<domain>; Postfix retries on its own",
            "Stale DNS pointing at a retired server: the domain owner must fix the MX/A records",
            "Wrong relayhost port: postconf -e 'relayhost = [<host>]:587' and postfix reload",
        ),
    ),
    Cause(
        "E03", "connect-unreachable", "Next hop unreachable (no route, network unreachable)", "connection",
        "The connection never left this machine or was bounced back by a router: no route to the address, "
        "network unreachable, or an address family the host cannot use. The classic case is an IPv6 MX on a "
        "server without working IPv6 routing; others are an ICMP 'administratively prohibited' from a "
        "firewall, or a smtp_bind_address the machine does not own.",
        (
            "ip route get <addr>",
            "ip -6 route get <addr>",
            "postconf -h inet_protocols smtp_address_preference smtp_bind_address smtp_bind_address6",
            "grep 'smtp_connect_addr: bind' /var/log/mail.log | tail",
        ),
        (
            "No IPv6 route: postconf -e 'smtp_address_preference = ipv4' && postfix reload",
            "No IPv6 at all: postconf -e 'inet_protocols = ipv4' && postfix stop && postfix start",
            "Bad bind address: postconf -e 'smtp_bind_address =' (or an address this host owns) && postfix reload",
        ),
    ),
    Cause(
        "E04", "greeting-timeout", "No SMTP greeting after connecting", "connection",
        "The TCP connection opened, but the 220 greeting never came within smtp_helo_timeout, or the "
        "connection closed before it. Frequent reasons: plain SMTP spoken to port 465, which waits for TLS "
        "first; a receiver that is overloaded or deliberately stalls senders it distrusts; a proxy or "
        "firewall accepting connections with nothing behind it. If the next hop is 127.0.0.1 or a socket, "
        "your own content filter has run out of free processes.",
        (
            "postconf -h relayhost smtp_tls_wrappermode smtp_tls_security_level smtp_helo_timeout",
            "swaks --server <addr> --port <port> --quit-after BANNER   # how long until 220?",
            "openssl s_client -connect <addr>:465 -brief   # when the port is 465",
            "grep 'SMTPS wrappermode' /var/log/mail.log | tail -3",
        ),
        (
            "Relayhost on port 465: postconf -e 'smtp_tls_wrappermode = yes' 'smtp_tls_security_level = encrypt' "
            "(or use relayhost = [<host>]:587 with STARTTLS)",
            "Receiver stalling you: check your reputation and reverse DNS (E23, E24), and lower concurrency to it",
            "Local filter out of processes: raise the filter's own process limit to at least the maxproc of its "
            "transport in master.cf (postconf -M)",
        ),
    ),
    Cause(
        "E05", "greeting-refused", "Server refused the session at greeting or HELO", "connection",
        "The server answered, but with a refusal instead of a welcome: a 4xx/5xx greeting, a 421 to EHLO, or a "
        "rejected HELO. Postfix treats even a 5xx greeting as temporary and moves on to the next MX. Receivers "
        "do this when they have too many connections (postscreen, anvil) or refuse your IP outright; the reply "
        "text names which.",
        (
            "swaks --server <addr> --quit-after HELO",
            "postconf -h smtp_skip_5xx_greeting smtp_helo_name myhostname",
            "dig +short -x <egress-ip>",
        ),
        (
            "Too many connections: lower concurrency for that destination (" + _SLOW_TRANSPORT + ")",
            "Reputation refusal: see E23 (blocklists) and E24 (reverse DNS)",
            "HELO rejected: postconf -e 'smtp_helo_name = <fqdn resolving to your egress IP>' && postfix reload",
        ),
    ),
    Cause(
        "E06", "helo-starttls-timeout", "Timed out or dropped during EHLO or STARTTLS", "connection",
        "The greeting arrived, then the session stalled or closed while Postfix waited for the answer to "
        "EHLO/HELO/LHLO or to STARTTLS. Receivers often run their slow checks here (reverse DNS, DNSBL "
        "lookups); middleboxes that inspect or strip STARTTLS cause the same; a hanging SASL AUTH exchange is "
        "also logged as this phase.",
        (
            "swaks --server <addr> --quit-after EHLO",
            "swaks --server <addr> -tls --quit-after TLS",
            "posttls-finger -c '[<addr>]:<port>'",
            "postconf -h smtp_helo_timeout smtp_starttls_timeout smtp_sasl_auth_enable",
        ),
        (
            "Receiver slow at EHLO: make sure your PTR and HELO name resolve so its checks finish fast; contact postmaster@<domain>",
            "Middlebox breaking STARTTLS: fix or bypass the device (e.g. disable SMTP inspection on the firewall)",
            "Restore defaults if they were lowered: postconf -X smtp_helo_timeout smtp_starttls_timeout && postfix reload",
        ),
    ),
    Cause(
        "E07", "command-timeout", "Timed out or dropped at MAIL FROM, RCPT TO or DATA", "connection",
        "The session reached the mail transaction, then stalled or closed while Postfix waited for the reply "
        "to MAIL FROM, RCPT TO, XFORWARD or the DATA command. Receivers that verify each recipient by calling "
        "another server, tarpit senders they dislike, or drop connections by policy cause this, and so does "
        "plain overload.",
        (
            "swaks --server <addr> --from <sender> --to <rcpt> --quit-after RCPT",
            "postconf -h smtp_mail_timeout smtp_rcpt_timeout smtp_data_init_timeout smtp_xforward_timeout",
            "postconf -P '*/*/smtp_rcpt_timeout'",
        ),
        (
            "Fewer recipients per delivery and fewer parallel sessions for that destination: "
            + _SLOW_TRANSPORT + "; also postconf -e 'slow_destination_recipient_limit = 10'",
            "Restore defaults if they were lowered: postconf -X smtp_mail_timeout smtp_rcpt_timeout smtp_data_init_timeout && postfix reload",
        ),
    ),
    Cause(
        "E08", "body-timeout", "Stalled while sending the message body", "connection",
        "Postfix was writing the message body and could make no progress for smtp_data_xfer_timeout (or fell "
        "under smtp_min_data_rate). It mostly hits large messages: a path-MTU black hole lets small packets "
        "pass but silently drops full-size ones, the link is slow or lossy, or the receiver drops the "
        "connection when the size is over its limit.",
        (
            "tracepath -n <addr>",
            "ping -M do -s 1472 -c 3 <addr>   # fails while -s 1200 passes = MTU black hole (IPv6: ping -6 -M do -s 1452)",
            "postconf -h smtp_data_xfer_timeout smtp_min_data_rate smtp_per_request_deadline",
            "postcat -q <queue-id> | wc -c   # how big is the stuck message?",
        ),
        (
            "Let ICMP 'fragmentation needed' (IPv6: 'packet too big') through every firewall on the path",
            "Clamp the MSS: iptables -t mangle -A POSTROUTING -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
            "Or probe the MTU: sysctl -w net.ipv4.tcp_mtu_probing=1; or lower the route MTU: ip route change default via <gateway> mtu 1400",
            "Restore the default if it was lowered: postconf -X smtp_data_xfer_timeout && postfix reload",
        ),
    ),
    Cause(
        "E09", "eod-timeout", "No reply after the end of the message (possible duplicates)", "connection",
        "Postfix sent the whole message and the final '.', then waited smtp_data_done_timeout (600 s by "
        "default) for the verdict and heard nothing. The receiver may already have accepted the message, so "
        "the next retry can deliver it a second time. The failure also marks the destination as dead for a "
        "while, which is why other mail to it then shows 'delivery temporarily suspended' with this same text.",
        (
            "postconf -h smtp_data_done_timeout smtp_per_request_deadline",
            "postconf -P '*/*/smtp_data_done_timeout'",
            "tracepath -n <addr>",
            "ping -M do -s 1472 -c 3 <addr>   # IPv6: ping -6 -M do -s 1452 -c 3 <addr>",
            "grep 'enabling PIX workarounds' /var/log/mail.log | tail",
            "postconf -h smtp_pix_workarounds smtp_pix_workaround_threshold_time smtp_pix_workaround_maps",
            "grep -F '<addr>' /var/log/mail.log | grep -o 'delays=[^,]*' | sort | uniq -c | sort -rn | head   # d near 600 = a silent receiver",
            "tcpdump -ni any host <addr> and port 25   # retransmitted full-size segments, no ICMP = MTU black hole",
        ),
        (
            "Receiver slow: ask postmaster@<domain> to scan after accepting (reply 250 first, filter after queueing)",
            "Wait longer for that one receiver (raises the duplicate risk): master.cf "
            "'slowdest unix - - n - - smtp -o smtp_data_done_timeout=1800s', '<domain> slowdest:' in "
            "/etc/postfix/transport, postmap /etc/postfix/transport, "
            "postconf -e 'transport_maps = hash:/etc/postfix/transport', postfix reload",
            "MTU black hole: let ICMP type 3 code 4 (ICMPv6 type 2) through; or "
            "iptables -t mangle -A POSTROUTING -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu; "
            "or ip route change default via <gateway> mtu 1400; or sysctl -w net.ipv4.tcp_mtu_probing=1",
            "SMTP-inspecting firewall: turn the inspection off on the device (PIX: 'no fixup protocol smtp 25'; "
            "ASA: remove 'inspect esmtp' from the policy map); meanwhile postconf -e "
            "'smtp_pix_workaround_threshold_time = 0' 'smtp_pix_workaround_maps = hash:/etc/postfix/pix_maps' "
            "with '<addr> delay_dotcrlf' in /etc/postfix/pix_maps, postmap it, postfix reload",
            "NAT/firewall idle timeout: raise the device's TCP established-session timeout well above 600 s",
            "Local override: postconf -X smtp_data_done_timeout, remove '-o smtp_data_done_timeout=...' from "
            "master.cf, postfix reload",
            "Messages already retried may have arrived twice: warn the recipients; nothing can recall them",
        ),
        likely_causes=(
            "Receiver slow after DATA (synchronous virus/spam scanning, milters, before-queue proxy, DNS stalls in "
            "its scanner, load). Confirm: d in delays= sits near 600 whatever the size; small test messages also "
            "wait long for the 250; recipients report duplicates with the same Message-ID.",
            "Path-MTU black hole (tunnel, VPN/WireGuard, PPPoE, container overlay, ICMP filtered). Confirm: only "
            "messages above a few KB fail; tracepath -n <addr> shows a smaller pmtu; ping -M do -s 1472 fails "
            "while -s 1200 passes; a receiving Postfix logs 'timeout after DATA (N bytes)'. Duplicates unlikely.",
            "SMTP-inspecting firewall (Cisco PIX 'fixup protocol smtp', ASA 'inspect esmtp') mangling the final "
            "'.'. Confirm: the greeting is masked with asterisks, the log shows 'enabling PIX workarounds', every "
            "size fails, and a later attempt (message older than smtp_pix_workaround_threshold_time) succeeds.",
            "NAT or stateful-firewall idle timeout shorter than the receiver's processing time. Confirm: the "
            "'lost connection' form (E10) with d clustered at one fixed value below 600 s.",
            "Local timeout lowered: smtp_data_done_timeout in main.cf, a master.cf -o override, or "
            "smtp_per_request_deadline with short limits. Confirm: postconf -h smtp_data_done_timeout; "
            "postconf -P '*/*/smtp_data_done_timeout'.",
            "Occasional packet loss or a short outage. Confirm: sporadic, spread over many destinations, no link "
            "to message size; nothing to change while it stays rare.",
        ),
    ),
    Cause(
        "E10", "eod-lost", "Connection lost after the end of the message (possible duplicates)", "connection",
        "Postfix sent the message and the final '.', and the connection closed before any verdict came back. "
        "As with the timeout, the receiver may have kept the message, so a retry can duplicate it. Someone hung "
        "up: the receiver's scanner crashed or hit a process limit, a policy dropped the message after reading "
        "it, or a NAT/firewall reset a connection that looked idle.",
        (
            "grep -F '<addr>' /var/log/mail.log | grep -o 'delays=[^,]*' | sort | uniq -c | sort -rn | head   # a constant d = idle timeout",
            "postconf -h smtp_data_done_timeout",
            "postconf -P '*/*/smtp_data_done_timeout'",
            "tracepath -n <addr>",
        ),
        (
            "Receiver crashing or dropping: send postmaster@<domain> the times and queue ids; ask about scanner limits",
            "NAT/firewall idle reset: raise the device's TCP established-session timeout above 600 s",
            "Same path checks and fixes as E09 for MTU problems",
        ),
        likely_causes=(
            "Receiver's scanner crashed, was killed, or hit its process limit. Confirm: d varies, failures come in bursts.",
            "Policy drop after reading the message. Confirm: the same messages fail every time, others pass.",
            "NAT or firewall reset of an idle-looking connection. Confirm: d repeats at one constant value.",
            "Path-MTU black hole, as for E09. Confirm: only large messages fail.",
        ),
    ),
    Cause(
        "E11", "destination-suspended", "Destination suspended after earlier failures (collateral)", "connection",
        "Postfix did not even try this recipient: earlier deliveries to the same destination failed in a way "
        "that marks it as dead, so mail waiting for it is parked for minimal_backoff_time. The text after "
        "'delivery temporarily suspended:' is that earlier failure. Fix it and these clear on their own.",
        (
            "postconf -h default_destination_concurrency_failed_cohort_limit smtp_destination_concurrency_failed_cohort_limit "
            "smtp_destination_rate_delay initial_destination_concurrency minimal_backoff_time",
        ),
        (
            "Fix the inner cause first",
            "Bursty destination that fails briefly: a tolerant transport: master.cf 'fragile unix - - n - - smtp', "
            "postconf -e 'fragile_destination_concurrency_failed_cohort_limit = 100', '<domain> fragile:' in the transport map",
            "With a destination rate delay set: postconf -e 'smtp_destination_concurrency_failed_cohort_limit = 10'",
            "After the fix: postqueue -i <queue-id> for one message; postqueue -f forgets dead destinations but should not be run often",
        ),
        root=False,
    ),
    # ---- B. DNS ------------------------------------------------------------------------------
    Cause(
        "E12", "dns-tempfail", "Temporary DNS failure for the destination", "dns",
        "Postfix could not get a definite DNS answer ('... try again'): a SERVFAIL or timeout. Either the "
        "destination's name servers are broken or lame, its DNSSEC signatures fail validation, or your own "
        "resolver is the problem: down, unreachable, or (smtp runs chrooted) an outdated copy of resolv.conf "
        "inside the Postfix spool.",
        (
            "dig MX <domain>",
            "dig +cd MX <domain>   # answers with +cd but SERVFAIL without = broken DNSSEC",
            "dig +short NS <domain>; dig @<ns> MX <domain> +norecurse",
            "diff /etc/resolv.conf /var/spool/postfix/etc/resolv.conf",
            "postconf -M smtp/unix   # the 5th column says whether smtp is chrooted",
            "postconf -h smtp_dns_support_level smtp_host_lookup smtp_dns_resolver_options",
        ),
        (
            "Stale chroot copy: cp /etc/resolv.conf /var/spool/postfix/etc/resolv.conf && postfix reload",
            "Your resolver down: fix or restart it, or point /etc/resolv.conf at a working one",
            "Their DNS broken: tell hostmaster@<domain> or the domain's technical contact; nothing to change locally",
            "Never set ignore_mx_lookup_error = yes: it delivers to the wrong place instead of waiting",
        ),
    ),
    Cause(
        "E13", "dns-hard", "Domain or host does not exist in DNS, or takes no mail", "dns",
        "DNS said for certain that the name does not exist, has no usable record, or publishes a null MX to "
        "declare it accepts no mail. Postfix normally bounces these at once; it defers them only when another "
        "temporary error happened in the same attempt, or when smtp_defer_if_no_mx_address_found is on. A typo "
        "in the recipient domain is the usual story.",
        (
            "dig MX <domain>",
            "dig A <mx-host>; dig AAAA <mx-host>",
            "postconf -h smtp_defer_if_no_mx_address_found",
        ),
        (
            "Correct the address with the sender",
            "The domain is yours: publish MX and A/AAAA records for it",
        ),
    ),
    Cause(
        "E14", "dns-policy", "Your DNS reply filter removed every answer", "dns",
        "Your own smtp_dns_reply_filter threw away all DNS records for this destination, so Postfix has nowhere "
        "to send the mail. The filter is doing what it was told; the rule is too broad or wrong.",
        (
            "postconf -h smtp_dns_reply_filter",
            "dig MX <domain>",
        ),
        (
            "Narrow or remove the matching rule in the smtp_dns_reply_filter table, then postfix reload",
        ),
    ),
    Cause(
        "E15", "mx-primary-unavailable", "Backup MX cannot find the primary", "dns",
        "This server is a backup MX for the domain (a lower-preference MX), and none of the better MX hosts has "
        "a usable address, so Postfix refuses to keep the mail bouncing between backups. The domain's DNS lists "
        "primaries that do not resolve.",
        (
            "dig MX <domain>",
            "dig A <mx-host>; dig AAAA <mx-host>   # for each MX better than this one",
            "postconf -h relay_domains permit_mx_backup_networks myhostname",
        ),
        (
            "The domain owner must fix the primary MX records",
            "Stop acting as backup MX for it: remove the domain from relay_domains",
        ),
    ),
    # ---- C. TLS ------------------------------------------------------------------------------
    Cause(
        "E16", "tls-not-offered", "TLS required, but the server did not offer STARTTLS", "tls",
        "Your TLS policy for this destination demands encryption (encrypt, verify, secure or dane), and the "
        "server's EHLO reply did not offer STARTTLS, so Postfix will not send in clear. Either the server has "
        "no TLS, a middlebox strips STARTTLS from its EHLO reply, or your own smtp_discard_ehlo_keywords hides it.",
        (
            "swaks --server <addr> --quit-after EHLO   # look for 250-STARTTLS",
            "postconf -h smtp_tls_security_level smtp_tls_policy_maps smtp_discard_ehlo_keywords",
            "postmap -q <domain> $(postconf -h smtp_tls_policy_maps)",
        ),
        (
            "If clear text is acceptable for this one destination: '<domain> may' in the smtp_tls_policy_maps table, postmap it",
            "Remove starttls from smtp_discard_ehlo_keywords (and from smtp_discard_ehlo_keyword_address_maps)",
            "Ask postmaster@<domain> to enable STARTTLS, or fix the middlebox",
        ),
    ),
    Cause(
        "E17", "tls-starttls-refused", "Server refused the STARTTLS command", "tls",
        "The server advertised STARTTLS but answered the command with an error, and your policy requires TLS, "
        "so the delivery stops. Usually the server's TLS setup is broken (missing key or certificate) and it "
        "says so in the reply.",
        (
            "swaks --server <addr> -tls --quit-after TLS",
            "posttls-finger -c '[<addr>]:<port>'",
            "postconf -h smtp_tls_security_level smtp_tls_policy_maps",
        ),
        (
            "Tell postmaster@<domain> their STARTTLS fails, with the reply text",
            "If clear text is acceptable meanwhile: '<domain> may' in the smtp_tls_policy_maps table, postmap it",
        ),
    ),
    Cause(
        "E18", "tls-handshake-failure", "TLS handshake failed", "tls",
        "The STARTTLS (or port 465) handshake broke down: no common protocol version or cipher, a broken TLS "
        "stack on the other side, a middlebox in between, or a handshake timeout. At security level 'may' "
        "Postfix retries in clear text once the message is older than minimal_backoff_time, so one deferral on "
        "the first attempt is expected; repeated ones under a mandatory policy are a real problem.",
        (
            "grep -E 'SSL_connect error|TLS library problem' /var/log/mail.log | tail",
            "openssl s_client -starttls smtp -connect <addr>:25 -brief",
            "posttls-finger -c '[<addr>]:<port>'",
            "postconf -h smtp_tls_security_level smtp_tls_protocols smtp_tls_mandatory_protocols smtp_tls_ciphers smtp_tls_mandatory_ciphers",
            "grep -i CipherString /etc/ssl/openssl.cnf   # OpenSSL security level",
        ),
        (
            "Old peer only: a per-destination policy instead of weakening everything: "
            "'<domain> may protocols=>=TLSv1 ciphers=medium' in the smtp_tls_policy_maps table, postmap it",
            "Tell postmaster@<domain> their TLS is outdated or broken, with the SSL_connect error text",
        ),
    ),
    Cause(
        "E19", "tls-auth-failure", "TLS peer not authenticated, or your TLS setup broken", "tls",
        "TLS came up or was about to, but the peer could not be authenticated as your policy requires (verify, "
        "secure, dane): self-signed, expired or wrongly named certificate, unknown CA, or DANE TLSA records "
        "missing, unusable or not resolvable. 'client TLS configuration problem', 'TLS engine is unavailable' "
        "and 'Temporary lookup error' point at your own TLS settings or policy table instead.",
        (
            "grep 'certificate verification failed' /var/log/mail.log | tail",
            "posttls-finger -c -l verify -P /etc/ssl/certs '[<addr>]:<port>'",
            "posttls-finger -c -l dane <domain>",
            "dig +dnssec TLSA _25._tcp.<mx-host>",
            "postconf -h smtp_tls_security_level smtp_tls_policy_maps smtp_tls_CAfile smtp_tls_CApath smtp_dns_support_level",
            "grep -E 'warning: .*(TLS|tls)' /var/log/mail.log | tail   # own configuration problems",
        ),
        (
            "Peer certificate broken: tell postmaster@<domain>; meanwhile, if acceptable, '<domain> encrypt' (encrypted, unverified) in the policy table",
            "Missing CA bundle: postconf -e 'smtp_tls_CAfile = /etc/ssl/certs/ca-certificates.crt' && postfix reload",
            "Policy table not built: postmap $(postconf -h smtp_tls_policy_maps) && postfix reload",
            "DANE records wrong: the domain owner must fix its TLSA records",
        ),
    ),
    # ---- D. SASL -----------------------------------------------------------------------------
    Cause(
        "E20", "sasl-failure", "Login to the relay (SASL) failed", "sasl",
        "Postfix tried to authenticate to the next hop, usually your relayhost or smarthost, and failed: wrong "
        "or missing credentials for that exact relay name, no mechanism both sides support (often the Cyrus "
        "SASL plugins are not installed, or AUTH is only offered after STARTTLS), or the server rejected the "
        "attempt. With smtp_sasl_auth_soft_bounce=yes (the default) even a permanent 535 stays queued.",
        (
            "postconf -h relayhost smtp_sasl_auth_enable smtp_sasl_password_maps smtp_sasl_security_options "
            "smtp_sasl_tls_security_options smtp_tls_security_level smtp_sasl_mechanism_filter",
            "postmap -q '[<host>]:<port>' hash:/etc/postfix/sasl_passwd",
            "swaks --server <host> --port <port> -tls --auth-user <user> --quit-after AUTH",
            "dpkg -l 'libsasl2-modules*'   # Debian/Ubuntu: PLAIN/LOGIN need this package",
        ),
        (
            "The sasl_passwd key must match relayhost exactly, e.g. '[smtp.example.com]:587 user:password'; "
            "then postmap hash:/etc/postfix/sasl_passwd && postfix reload",
            "'no mechanism available': apt-get install libsasl2-modules (RHEL: dnf install cyrus-sasl-plain)",
            "AUTH offered only after STARTTLS: postconf -e 'smtp_tls_security_level = encrypt' && postfix reload",
            "Allow plain-text mechanisms over TLS: postconf -e 'smtp_sasl_security_options = noanonymous' "
            "'smtp_sasl_tls_security_options = noanonymous'",
            "Provider refuses the password (Gmail, Microsoft 365): use an app password or the provider's SMTP relay option",
        ),
    ),
    # ---- E. replies from the receiver ---------------------------------------------------------
    Cause(
        "E21", "greylisting", "Greylisting at the receiver", "reply",
        "The receiver is greylisting: it turns away the first attempt from an unknown combination of sender, "
        "IP and recipient, and accepts a retry after a few minutes. This is normal and clears at the next "
        "retry, as long as the retry comes from the same IP address.",
        (
            "grep -F '<rcpt>' /var/log/mail.log | grep 'status='   # a later status=sent confirms",
            "postconf -h minimal_backoff_time queue_run_delay smtp_bind_address smtp_bind_address6",
        ),
        (
            "Usually nothing: wait for the next retry",
            "Several egress addresses: pin one so retries come from the same IP: postconf -e 'smtp_bind_address = <egress-ip>'",
            "Regular high volume to that domain: ask postmaster@<domain> to allowlist your IP",
        ),
    ),
    Cause(
        "E22", "rate-limited", "Receiver is rate-limiting you", "reply",
        "The receiver limits how fast it takes mail from you: too many connections, messages or recipients in a "
        "short time, or a limit tied to your IP or domain reputation (Gmail 4.7.28, Microsoft 4.7.650, Yahoo "
        "TS/TSS codes). Mail goes through as the pace drops; pushing harder makes it worse and can turn into "
        "blocking.",
        (
            "postconf -h smtp_destination_concurrency_limit smtp_destination_rate_delay smtp_destination_recipient_limit",
            "grep -F '@<domain>' /var/log/mail.log | grep -c 'status=sent'   # how much you send there",
            "dig +short TXT <sender-domain>; dig +short TXT _dmarc.<sender-domain>",
        ),
        (
            _SLOW_TRANSPORT,
            "Keep lists clean, honour complaints and unsubscribes, sign with DKIM, publish SPF and DMARC",
            "Watch the provider's sender tools: Gmail Postmaster Tools, Microsoft SNDS, Yahoo Sender Hub",
        ),
    ),
    Cause(
        "E23", "reputation-blocklist", "Blocked for IP or domain reputation", "reply",
        "The receiver refuses or defers you because of the reputation of your sending IP or domain: you are on "
        "a DNS blocklist or the provider's own list, or your mail looks like spam to its filters. Providers "
        "usually reject for good (a bounce); you see it as deferred when the reply is 4xx, when it came as a "
        "greeting refusal, or when soft_bounce turned it into a deferral.",
        (
            "dig +short <reversed-egress-ip>.zen.spamhaus.org   # 127.0.0.x = listed; 127.255.255.x = query refused, use your own resolver",
            "dig +short -x <egress-ip>",
            "Open the lookup link the reply text gives, if any",
        ),
        (
            "Find and stop the source of bad mail (compromised account, abused web form), then request delisting on the list's site",
            "Microsoft: https://sender.office.com; Gmail: Postmaster Tools; Proofpoint: https://ipcheck.proofpoint.com",
            "Meanwhile relay through a reputable smarthost: postconf -e 'relayhost = [smtp.provider.example]:587' (with SASL)",
        ),
    ),
    Cause(
        "E24", "reverse-dns", "Your IP's reverse DNS or HELO name was rejected", "reply",
        "The receiver checked the reverse DNS (PTR) of the IP you connect from, or your HELO name, and found it "
        "missing or not matching: the PTR name must exist and resolve back to the same IP. A receiving Postfix "
        "defers this with 450 4.7.25 by default, so it stays in your queue rather than bouncing.",
        (
            "dig +short -x <egress-ip>",
            "dig +short A <ptr-name>; dig +short AAAA <ptr-name>   # must contain <egress-ip>",
            "postconf -h smtp_helo_name myhostname smtp_address_preference smtp_bind_address",
        ),
        (
            "Ask whoever owns the IP (hosting provider, ISP) to set its PTR to your mail host name, and point that name's A/AAAA back at the IP",
            "postconf -e 'smtp_helo_name = <fqdn resolving to your egress IP>' && postfix reload",
            "Only IPv4 has a PTR: postconf -e 'smtp_address_preference = ipv4' && postfix reload",
        ),
    ),
    Cause(
        "E25", "sender-domain-dns", "Envelope sender rejected (sender domain)", "reply",
        "The receiver rejected the envelope sender: its domain does not resolve (no MX or A), or verifying the "
        "sender address failed. Mail from names such as root@localhost.localdomain or an internal-only domain "
        "runs into this.",
        (
            "postconf -h myorigin myhostname mydomain masquerade_domains sender_canonical_maps",
            "dig MX <sender-domain>; dig A <sender-domain>",
            "postcat -eq <queue-id> | grep -i sender",
        ),
        (
            "postconf -e 'myorigin = <a real, resolvable domain>' && postfix reload",
            "Rewrite internal senders: postconf -e 'sender_canonical_maps = hash:/etc/postfix/sender_canonical' "
            "with 'root@localhost.localdomain admin@<your-domain>' in it, postmap it, postfix reload",
            "Publish MX/A records for the sender domain",
        ),
    ),
    Cause(
        "E26", "auth-temperror", "SPF, DKIM or DMARC check failed at the receiver", "reply",
        "The receiver could not complete (or did not pass) its SPF, DKIM or DMARC check of your mail and asks "
        "you to retry, or slows down mail it cannot authenticate. The fault is usually in your own domain's "
        "DNS: slow or broken name servers, an SPF record needing more than 10 lookups, or a DKIM signature that "
        "does not verify or align.",
        (
            "dig +short TXT <sender-domain>   # the SPF record; count include/a/mx/redirect lookups (max 10)",
            "dig +short TXT _dmarc.<sender-domain>",
            "dig +short TXT <selector>._domainkey.<sender-domain>",
            "dig +short NS <sender-domain>; dig @<ns> TXT <sender-domain> +norecurse   # every server must answer",
        ),
        (
            "Flatten the SPF record to 10 lookups or fewer; keep it under 512 bytes",
            "Fix or replace name servers of <sender-domain> that time out",
            "Sign with DKIM aligned to the From domain (e.g. OpenDKIM/rspamd as a milter)",
        ),
    ),
    Cause(
        "E27", "recipient-tempfail", "Temporary problem with this recipient at the receiver", "reply",
        "The receiver has a temporary problem with this particular recipient: the mailbox is full or over "
        "quota, the address could not be verified just now, or its user lookup failed. A 450 'User unknown' "
        "means the receiver is in soft-reject mode or its directory failed; the address may well not exist. "
        "Other recipients of the same message can be delivered meanwhile.",
        (
            "grep -F '<rcpt>' /var/log/mail.log | grep 'status='",
            "postqueue -j | grep -F '<rcpt>'",
        ),
        (
            "Mailbox full: only the recipient can free space; tell the sender",
            "Persistent 450 'User unknown': the address is probably wrong; ask postmaster@<domain>",
            "'Relay access denied' from your relayhost: authenticate to it (smtp_sasl_auth_enable = yes) or have your IP allowed",
            "'Relay access denied' from the domain's MX: that server is not set up for <domain>; tell the domain owner",
        ),
    ),
    Cause(
        "E28", "receiver-resources", "Receiver out of resources or failing internally", "reply",
        "The receiver is short of resources or had an internal error: disk full, queue file write error, a "
        "milter or scanner not answering, all ports busy. The problem is on their side and usually passes; if "
        "it lasts for days, tell their postmaster.",
        (
            "grep -F '<addr>' /var/log/mail.log | grep -c 'status=deferred'",
            "swaks --server <addr> --to <rcpt>",
        ),
        (
            "Contact postmaster@<domain> with the reply text and times",
            "If the receiver is your own server (LMTP, internal relay): df -h; df -i; check its milters and logs",
        ),
    ),
    Cause(
        "E29", "remote-4xx-unspecified", "Temporary reply from the receiver, not recognised", "reply",
        "The receiver answered with a temporary (4xx) error that pfdiag does not recognise. Read the reply text "
        "and the command it answered: a reply to RCPT TO is about one recipient, a reply to MAIL FROM or end of "
        "DATA about the whole message. DSN 4.0.0 means the server gave no enhanced status code.",
        (
            "grep -F '<host>' /var/log/mail.log | grep -o 'said: .*' | sort | uniq -c | sort -rn | head",
            "swaks --server <addr> --to <rcpt>",
        ),
        (
            "Look up the reply on the provider's postmaster pages; send postmaster@<domain> the full reply and time",
            "Add the text to diagnose/data/replies.toml so pfdiag recognises it next time",
        ),
    ),
    # ---- F. routing, configuration, local infrastructure ---------------------------------------
    Cause(
        "E30", "mail-loop", "Mail loops back to this server", "routing",
        "The next hop for this domain turned out to be this very server (it greeted with your own hostname, or "
        "you are its best MX), but Postfix is not set up to accept the domain locally. Typical reasons: the "
        "domain is MX'd to you but missing from mydestination, virtual_mailbox_domains or relay_domains; NAT "
        "hides your public address (proxy_interfaces unset); two instances share one myhostname; relayhost "
        "points at yourself.",
        (
            "postconf -h myhostname mydestination virtual_mailbox_domains virtual_alias_domains relay_domains proxy_interfaces relayhost",
            "dig +short MX <domain>",
            "grep 'greeted me with my own hostname' /var/log/mail.log | tail",
        ),
        (
            "Accept the domain where it belongs: postconf -e 'mydestination = $myhostname, localhost, <domain>' "
            "(or add it to virtual_mailbox_domains / relay_domains) && postfix reload",
            "Behind NAT: postconf -e 'proxy_interfaces = <public-ip>' && postfix reload",
            "Give each Postfix instance its own myhostname; point relayhost somewhere else",
        ),
    ),
    Cause(
        "E31", "transport-failure", "Delivery agent or transport unavailable", "routing",
        "The queue manager could not hand the mail to a delivery agent: the transport named for it is missing "
        "from master.cf, its processes keep crashing, or it is listed in defer_transports. Postfix waits "
        "transport_retry_time and tries again; the actual error is in a warning, fatal or panic line logged "
        "just before.",
        (
            "grep -E '(warning|error|fatal|panic):' /var/log/mail.log | tail -50",
            "postconf -M",
            "postconf -h default_transport relay_transport local_transport virtual_transport content_filter transport_maps defer_transports",
            "postfix check",
        ),
        (
            "Define the missing service in master.cf (the one content_filter, virtual_transport or transport_maps names) "
            "or point the setting at an existing one; postfix reload",
            "Remove it from defer_transports: postconf -e 'defer_transports =' && postfix reload",
            "Fix the crash the fatal/panic line names (missing table, permissions, chroot files)",
        ),
    ),
    Cause(
        "E32", "local-nexthop-down", "Local filter, LMTP server or relay on this machine is down", "routing",
        "The next hop is a service on this machine: a content filter (amavis, spamassassin, an rspamd proxy), "
        "an LMTP server (Dovecot, Cyrus) or a local relay, and it is not taking mail: stopped, listening on "
        "another port or socket, a socket Postfix may not open, or it answers with a local error. Everything "
        "routed through it waits until it is back.",
        (
            "postconf -h content_filter virtual_transport mailbox_transport relayhost transport_maps",
            "ss -ltnp   # is anything listening on <port>?",
            "ls -l <addr>   # for a socket: does it exist, who may write to it?",
            "postconf -M | grep -Ei 'amavis|lmtp|dovecot|filter'",
        ),
        (
            "Start the service (e.g. systemctl start amavis, or dovecot) and read its own log for why it stopped",
            "Socket path or permissions: the socket must sit where Postfix looks (inside the chroot, e.g. "
            "/var/spool/postfix/private/dovecot-lmtp) and be writable by the postfix user",
            "Match the port: content_filter = smtp-amavis:[127.0.0.1]:10024 must name what the filter listens on",
        ),
    ),
    Cause(
        "E33", "soft-bounce-active", "soft_bounce is on: permanent failures kept as deferrals", "routing",
        "soft_bounce = yes is set, so Postfix keeps mail it would otherwise bounce: permanent rejections stay in "
        "the queue (logged as SOFTBOUNCE) and are retried until they expire. It is a testing aid; left on, it "
        "hides real bounces and fills the queue. The inner reason tells why the mail was refused.",
        (
            "postconf -h soft_bounce",
            "postconf -P '*/*/soft_bounce'",
        ),
        (
            "postconf -e 'soft_bounce = no' && postfix reload",
            "Then decide about mail already held: postqueue -f makes it bounce now; postsuper -d <queue-id> deletes it",
        ),
    ),
    # ---- G. local delivery ---------------------------------------------------------------------
    Cause(
        "E34", "mailbox-write", "Cannot write to the local mailbox", "local",
        "Local delivery could not write the recipient's mailbox: the disk or its inode table is full, the "
        "mailbox is locked by another program, or permissions are wrong. A full disk is deferred; quota and "
        "file-size limits usually bounce.",
        (
            "df -h /var/mail; df -i /var/mail",
            "ls -l /var/mail/<user>",
            "postconf -h mailbox_size_limit message_size_limit mail_spool_directory home_mailbox mailbox_command",
        ),
        (
            "Free disk space or inodes on the mail spool",
            "Fix ownership: chown <user>:mail /var/mail/<user>",
            "Stale lock: remove /var/mail/<user>.lock if no process holds it",
        ),
    ),
    Cause(
        "E35", "local-lookup-failure", "Local lookup table unavailable", "local",
        "A table needed for local delivery could not be read: the aliases database, a user lookup (passwd, LDAP "
        "or SQL through NSS), or another lookup table. Delivery waits until the lookup works again; the "
        "warning lines just before name the table.",
        (
            "grep -E '(warning|error|fatal):' /var/log/mail.log | tail",
            "postconf -h alias_maps alias_database local_recipient_maps",
            "ls -l /etc/aliases /etc/aliases.db",
            "getent passwd <user>",
        ),
        (
            "Rebuild the aliases: newaliases",
            "Rebuild any table older than its source: postmap <table>",
            "Restore the LDAP/SQL/NSS service the lookup depends on",
        ),
    ),
    Cause(
        "E36", "pipe-tempfail", "Delivery command failed temporarily", "local",
        "A program Postfix delivers to (a pipe transport, mailbox_command, or a '|command' in .forward or "
        "aliases) exited with the temporary-failure code 75, was killed by a signal, ran out of time, or hit a "
        "resource problem. Postfix retries later; the command's own output, when logged, says why.",
        (
            "postconf -M | grep pipe",
            "postconf -h mailbox_command command_time_limit",
            "sudo -u <user> <command> < /tmp/test.eml; echo $?   # 75 = temporary failure",
        ),
        (
            "Fix the command's own error (its log, its dependencies, its permissions)",
            "Raise the limit if the command is just slow: postconf -e 'command_time_limit = 3600s' && postfix reload",
        ),
    ),
    Cause(
        "E37", "not-a-deferral", "Permanent failure (bounced), not a deferral", "local",
        "This is a permanent refusal: the recipient does not exist, a forwarding or alias loop was found, or "
        "the receiver rejected the message for good with a 5xx reply. Postfix returns such mail to the sender "
        "instead of retrying, so it is not why mail is stuck, unless it shows up as deferred, which means "
        "soft_bounce is on (E33).",
        (
            "grep -F '<rcpt>' /var/log/mail.log",
            "postconf -h soft_bounce local_recipient_maps virtual_alias_maps",
        ),
        (
            "Correct the address with the sender",
            "Alias or forwarding loop: fix the alias or .forward chain, then newaliases",
            "If these sit in the queue: postconf -e 'soft_bounce = no' && postfix reload",
        ),
    ),
    # ---- H. end of life ------------------------------------------------------------------------
    Cause(
        "E38", "expired", "Message expired and was returned to the sender", "lifetime",
        "The message stayed queued longer than maximal_queue_lifetime (bounce_queue_lifetime for bounces) and "
        "went back to the sender, or an operator expired it by hand (postsuper -e). The reason it never got "
        "through is the last deferral recorded for it.",
        (
            "postconf -h maximal_queue_lifetime bounce_queue_lifetime",
            "grep -F '<queue-id>' /var/log/mail.log",
        ),
        (
            "Fix the cause of the last deferral of this message",
            "Lifetimes only decide how long Postfix keeps trying; raising them hides a problem instead of fixing it",
        ),
    ),
)

UNCLASSIFIED = Cause(
    "unclassified", "unclassified", "Reason not recognised", "unknown",
    "pfdiag does not recognise this deferral text, so it cannot say what it means. The reason is kept word "
    "for word; the text itself, the server it names and the time usually point the way.",
    (
        "grep -F '<queue-id>' /var/log/mail.log",
        "grep -E '(warning|error|fatal|panic):' /var/log/mail.log | tail",
    ),
    (
        "If it is a remote server's reply, add it to diagnose/data/replies.toml",
        "Otherwise report the text to pfdiag so the classifier learns it",
    ),
)

CAUSES: dict[str, Cause] = {c.id: c for c in _CATALOG}
CAUSES[UNCLASSIFIED.id] = UNCLASSIFIED


def get_cause(cause_id: str) -> Cause:
    """The catalog entry for "E01".."E38" (any case) or "unclassified"; KeyError for anything else."""
    key = cause_id.strip()
    found = CAUSES.get(key) or CAUSES.get(key.upper())
    if found is None:
        raise KeyError(f"unknown cause id {cause_id!r}")
    return found


def all_causes() -> list[Cause]:
    """Every catalog entry in id order, "unclassified" last."""
    return [*_CATALOG, UNCLASSIFIED]
