#!/usr/bin/env bash
# `make test` runs this first: tests/test_sharing.py starts a real OpenSSH sshd on loopback for the ssh://
# store tests, which fail (never skip) without it. Installs openssh-server where it is missing and apt-get
# can (as root, or through passwordless sudo); otherwise says how, and the tests name it again.
set -u
if command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; then exit 0; fi
if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
    echo "installing openssh-server (sshd) for the ssh:// sharing tests" >&2
    if $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; then
        exit 0
    fi
fi
echo "warning: sshd is not installed and could not be installed here; the ssh:// sharing tests will fail." >&2
echo "         Install OpenSSH's server (Debian/Ubuntu: apt-get install openssh-server; macOS: it ships with the OS)." >&2
exit 0
