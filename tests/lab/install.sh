#!/usr/bin/env bash
# Install the Debian packages the test lab needs, without starting any service.
# Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
command -v postconf >/dev/null || need+=(postfix)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)  # the TLS peers make a self-signed certificate
command -v pflogsumm >/dev/null || need+=(pflogsumm)
command -v swaks >/dev/null || need+=(swaks)
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)  # tools/screenshots.py: the HTML report in a real browser
command -v sudo >/dev/null || need+=(sudo)  # the SSH target tests log in as a non-root user
[ -x /usr/bin/prometheus-node-exporter ] || need+=(prometheus-node-exporter)  # pfdiag check -f prometheus, scraped
command -v promtool >/dev/null || need+=(prometheus)  # promtool check metrics
[ ${#need[@]} -eq 0 ] && exit 0
# Nothing may auto-start: the lab starts what it needs on loopback itself.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string lab.pfdiag.test
postfix postfix/destinations string lab.pfdiag.test, localhost
SEL
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
