/*
 * fifo_client — a C client of the FIFO pair (fifos/fifoc), for the tests: the course's
 * protocol spoken as its C client speaks it, written from SPEC.md.
 *
 * It makes its reply FIFO ".fifo<PID>" in the current directory and opens it (O_RDWR: the open
 * does not wait for a writer, and the server finds a reader there as soon as the request comes),
 * opens the server's ".fifo" for writing (blocking, as the C does), writes one 160-byte record,
 * reads the 160-byte reply, prints it and removes its FIFO.
 *
 * The record is filled on the stack with strcpy/sprintf and never zeroed: after each NUL come
 * whatever bytes lay there. A fresh process's stack is often all zeros, which would hide that,
 * so the struct is first filled with junk: the bytes a used stack may hold.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "cpeer.h"

#define MODE 0600            /* of the FIFO we make */

static char reply_fifo[32];

static void remove_reply_fifo(void)
{
    unlink(reply_fifo);
}

int main(void)
{
    struct record msg;
    int reply_fd, server_fd;
    ssize_t n;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */
    memset(&msg, 0xa5, sizeof msg);   /* stack garbage, made certain (see above) */

    sprintf(reply_fifo, ".fifo%d", (int)getpid());
    if (mkfifo(reply_fifo, MODE) < 0)
        fail("mkfifo");
    remove_owned = remove_reply_fifo;
    if ((reply_fd = open(reply_fifo, O_RDWR)) < 0)
        fail("open(reply FIFO)");
    if ((server_fd = open(SERVER_FIFO, O_WRONLY)) < 0)
        fail("open(" SERVER_FIFO ")");

    strcpy(msg.fifo_name, reply_fifo);
    sprintf(msg.text, "This is a request from %d.", (int)getpid());
    if (write(server_fd, &msg, sizeof msg) != sizeof msg)
        fail("write");
    printf("Sent a request.....");

    if ((n = read(reply_fd, &msg, sizeof msg)) != sizeof msg) {
        if (n >= 0)
            fprintf(stderr, "read: a reply of %zd bytes, not %zu\n", n, sizeof msg);
        fail("read");
    }
    printf("Received reply: %.*s\n", (int)sizeof msg.text, msg.text);

    close(reply_fd);
    close(server_fd);
    remove_reply_fifo();
    return 0;
}
