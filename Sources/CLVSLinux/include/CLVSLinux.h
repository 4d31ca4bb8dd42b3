// What Swift cannot import from Glibc: declarations behind _GNU_SOURCE and
// kernel headers. The header stays free of system includes (which would
// clash with Glibc's module); the bodies are in shim.c.
#ifndef CLVSLINUX_H
#define CLVSLINUX_H

/// The user id of a Unix socket's peer (SO_PEERCRED), or -1.
long long lvs_peer_uid(int fd);

/// accept4 with SOCK_CLOEXEC.
int lvs_accept_cloexec(int fd);

#endif
