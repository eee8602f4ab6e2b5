/*
 * A probe for tests/test_native_preload.py: makes the C library calls the preload
 * library wraps, straight from C, and prints what each returned, one line per call.
 *
 *   native_probe CMD ARGS... [CMD ARGS...]...
 *
 *   connect HOST PORT          UDP connect (IPv4 or IPv6 numeric host)
 *   sendto HOST PORT           UDP sendto of one byte
 *   sendmmsg H1 P1 H2 P2       one sendmmsg of two datagrams
 *   getaddrinfo NAME           -> rc (an EAI_ code) and errno
 *   gethostbyname NAME         -> found or NULL, h_errno, errno (also gethostbyname2,
 *   gethostbyname_r NAME          gethostbyname_r, gethostbyname2_r: -> rc, result,
 *   gethostbyname2_r NAME         h_errno)
 *   gethostbyaddr ADDR         a reverse lookup
 *   getnameinfo ADDR           a reverse lookup of ADDR:80
 *   exec HOW                   start /usr/bin/env with an empty environment through
 *                              execve, execv, execvp, execvpe, execl, execlp, execle,
 *                              fexecve, posix_spawn or posix_spawnp, and wait for it;
 *                              its output is its environment
 *
 * Output lines: "CMD rc=N errno=NAME ...". Built by the tests with -Werror.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *
errname(int e)
{
    switch (e) {
    case 0:
        return "0";
    case EACCES:
        return "EACCES";
    case ECONNREFUSED:
        return "ECONNREFUSED";
    case ENETUNREACH:
        return "ENETUNREACH";
    case ENOENT:
        return "ENOENT";
    default:
        return "other";
    }
}

/* A numeric host and port as a sockaddr; its length, or 0. */
static socklen_t
address(const char *host, const char *port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)atoi(port));
        return sizeof(*sin);
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)atoi(port));
        return sizeof(*sin6);
    }
    return 0;
}

static void
do_socket_call(const char *cmd, const char *host, const char *port)
{
    struct sockaddr_storage ss;
    socklen_t len = address(host, port, &ss);
    int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
    errno = 0;
    long rc;
    if (strcmp(cmd, "connect") == 0) {
        rc = connect(fd, (struct sockaddr *)&ss, len);
    }
    else {
        rc = (long)sendto(fd, "x", 1, 0, (struct sockaddr *)&ss, len);
    }
    printf("%s rc=%ld errno=%s\n", cmd, rc, errname(errno));
    close(fd);
}

static void
do_sendmmsg(const char *h1, const char *p1, const char *h2, const char *p2)
{
    struct sockaddr_storage a, b;
    socklen_t la = address(h1, p1, &a), lb = address(h2, p2, &b);
    struct iovec iov = {.iov_base = "x", .iov_len = 1};
    struct mmsghdr msgs[2];
    memset(msgs, 0, sizeof(msgs));
    msgs[0].msg_hdr.msg_name = &a;
    msgs[0].msg_hdr.msg_namelen = la;
    msgs[1].msg_hdr.msg_name = &b;
    msgs[1].msg_hdr.msg_namelen = lb;
    for (int i = 0; i < 2; i++) {
        msgs[i].msg_hdr.msg_iov = &iov;
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int fd = socket(a.ss_family, SOCK_DGRAM, 0);
    errno = 0;
    int rc = sendmmsg(fd, msgs, 2, 0);
    printf("sendmmsg rc=%d errno=%s\n", rc, errname(errno));
    close(fd);
}

static void
do_lookup(const char *cmd, const char *name)
{
    struct hostent ret, *result = NULL, *h;
    char buf[8192];
    int herr = 0, rc;
    errno = 0;
    h_errno = 0;
    if (strcmp(cmd, "getaddrinfo") == 0) {
        struct addrinfo *res = NULL;
        rc = getaddrinfo(name, "80", NULL, &res);
        printf("getaddrinfo rc=%s errno=%s\n", rc == 0 ? "0" : rc == EAI_SYSTEM ? "EAI_SYSTEM" : "other",
               errname(errno));
        if (rc == 0) {
            freeaddrinfo(res);
        }
        return;
    }
    if (strcmp(cmd, "gethostbyname") == 0 || strcmp(cmd, "gethostbyname2") == 0) {
        h = cmd[13] == '2' ? gethostbyname2(name, AF_INET) : gethostbyname(name);
        if (h != NULL) {
            printf("%s found=1\n", cmd);
        }
        else {
            printf("%s found=0 h_errno=%d errno=%s\n", cmd, h_errno, errname(errno));
        }
        return;
    }
    if (cmd[13] == '2') {
        rc = gethostbyname2_r(name, AF_INET, &ret, buf, sizeof(buf), &result, &herr);
    }
    else {
        rc = gethostbyname_r(name, &ret, buf, sizeof(buf), &result, &herr);
    }
    if (result != NULL) {
        printf("%s rc=%s found=1\n", cmd, rc == 0 ? "0" : errname(rc));
    }
    else {
        printf("%s rc=%s found=0 h_errno=%d\n", cmd, rc == 0 ? "0" : errname(rc), herr);
    }
}

static void
do_reverse(const char *cmd, const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len = address(host, "80", &ss);
    errno = 0;
    if (strcmp(cmd, "gethostbyaddr") == 0) {
        const void *addr = ss.ss_family == AF_INET
                               ? (const void *)&((struct sockaddr_in *)&ss)->sin_addr
                               : (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        struct hostent *h = gethostbyaddr(addr, ss.ss_family == AF_INET ? 4 : 16, ss.ss_family);
        printf("gethostbyaddr found=%d errno=%s\n", h != NULL, errname(errno));
        return;
    }
    char name[NI_MAXHOST];
    int rc = getnameinfo((struct sockaddr *)&ss, len, name, sizeof(name), NULL, 0, NI_NAMEREQD);
    printf("getnameinfo rc=%s errno=%s\n", rc == 0 ? "0" : rc == EAI_SYSTEM ? "EAI_SYSTEM" : "other",
           errname(errno));
}

static void
do_exec(const char *how)
{
    char *argv[] = {"env", NULL};
    char *empty[] = {NULL};
    pid_t pid;
    int status = -1, rc = 0;
    fflush(stdout);
    if (strcmp(how, "posix_spawn") == 0 || strcmp(how, "posix_spawnp") == 0) {
        rc = how[11] == 'p' ? posix_spawnp(&pid, "env", NULL, NULL, argv, empty)
                            : posix_spawn(&pid, "/usr/bin/env", NULL, NULL, argv, empty);
        if (rc == 0) {
            waitpid(pid, &status, 0);
        }
        printf("exec %s rc=%d status=%d\n", how, rc, status);
        return;
    }
    pid = fork();
    if (pid == 0) {
        if (strcmp(how, "execve") == 0) {
            execve("/usr/bin/env", argv, empty);
        }
        else if (strcmp(how, "execvpe") == 0) {
            execvpe("env", argv, empty);
        }
        else if (strcmp(how, "execle") == 0) {
            execle("/usr/bin/env", "env", (char *)NULL, empty);
        }
        else if (strcmp(how, "fexecve") == 0) {
            int fd = open("/usr/bin/env", O_RDONLY | O_CLOEXEC);
            fexecve(fd, argv, empty);
        }
        else {
            /* the variants without an environment use environ: empty it first */
            clearenv();
            if (strcmp(how, "execv") == 0) {
                execv("/usr/bin/env", argv);
            }
            else if (strcmp(how, "execvp") == 0) {
                execvp("env", argv);
            }
            else if (strcmp(how, "execl") == 0) {
                execl("/usr/bin/env", "env", (char *)NULL);
            }
            else if (strcmp(how, "execlp") == 0) {
                execlp("env", "env", (char *)NULL);
            }
        }
        _exit(127);
    }
    waitpid(pid, &status, 0);
    printf("exec %s rc=%d status=%d\n", how, rc, status);
}

int
main(int argc, char **argv)
{
    int i = 1;
    while (i < argc) {
        const char *cmd = argv[i];
        if ((strcmp(cmd, "connect") == 0 || strcmp(cmd, "sendto") == 0) && i + 2 < argc) {
            do_socket_call(cmd, argv[i + 1], argv[i + 2]);
            i += 3;
        }
        else if (strcmp(cmd, "sendmmsg") == 0 && i + 4 < argc) {
            do_sendmmsg(argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4]);
            i += 5;
        }
        else if (strncmp(cmd, "get", 3) == 0 && strstr(cmd, "byaddr") == NULL &&
                 strcmp(cmd, "getnameinfo") != 0 && i + 1 < argc) {
            do_lookup(cmd, argv[i + 1]);
            i += 2;
        }
        else if ((strcmp(cmd, "gethostbyaddr") == 0 || strcmp(cmd, "getnameinfo") == 0) &&
                 i + 1 < argc) {
            do_reverse(cmd, argv[i + 1]);
            i += 2;
        }
        else if (strcmp(cmd, "exec") == 0 && i + 1 < argc) {
            do_exec(argv[i + 1]);
            i += 2;
        }
        else {
            fprintf(stderr, "native_probe: bad arguments at %s\n", cmd);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
