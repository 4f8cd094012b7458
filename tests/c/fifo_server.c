/*
 * fifo_server — a C server of the FIFO pair (fifos/fifoc), for the tests: the course's protocol
 * spoken as its C server speaks it, written from SPEC.md.
 *
 * Usage: fifo_server [N]  — serve N requests (default 1), then remove ".fifo" and exit.
 *
 * It makes ".fifo" in the current directory (an existing one is reused) and opens it O_RDWR:
 * being a writer itself, its read never sees end-of-file between clients. Per 160-byte request
 * it prints "Received request: <text>.....", opens the reply FIFO the request names (a blocking
 * open, as the C does), writes the reply record — the request's buffer with the new text — and
 * prints "Replied.". SIGINT or SIGTERM removes ".fifo" and ends it.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "cpeer.h"

#define MODE 0600            /* of the FIFO we make */

static void remove_server_fifo(void)
{
    unlink(SERVER_FIFO);
}

int main(int argc, char **argv)
{
    long requests = argc > 1 ? atol(argv[1]) : 1;
    struct record msg;
    int fd, reply_fd;
    ssize_t n;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */
    stop_on_signals();

    if (mkfifo(SERVER_FIFO, MODE) < 0 && errno != EEXIST)
        fail("mkfifo");
    remove_owned = remove_server_fifo;
    if ((fd = open(SERVER_FIFO, O_RDWR)) < 0)
        fail("open(" SERVER_FIFO ")");

    while (requests > 0) {
        if ((n = read(fd, &msg, sizeof msg)) != sizeof msg) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n >= 0)
                fprintf(stderr, "read: a request of %zd bytes, not %zu\n", n, sizeof msg);
            fail("read");
        }
        printf("Received request: %.*s.....", (int)sizeof msg.text, msg.text);

        if ((reply_fd = open(msg.fifo_name, O_WRONLY)) < 0)
            fail("open(reply FIFO)");
        sprintf(msg.text, "This is a reply from %d.", (int)getpid());
        if (write(reply_fd, &msg, sizeof msg) != sizeof msg)
            fail("write");
        close(reply_fd);
        printf("Replied.\n");
        requests--;
    }

    close(fd);
    remove_server_fifo();
    return 0;
}
