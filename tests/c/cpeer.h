/*
 * cpeer.h — what the C peers of the tests share, written from SPEC.md: MY_ID, the layouts of
 * the three pairs, and how a program ends. The course's C programs kept MY_ID and their layouts
 * in a header per mechanism; here one header holds all three.
 */
#ifndef CPEER_H
#define CPEER_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* MY_ID of the course's headers, taken from $IPCLAB_ID (decimal or 0x-hex) so that each test
 * has keys of its own. */
static inline long my_id(void)
{
    const char *id = getenv("IPCLAB_ID");
    if (!id)
        return 0;
    return strncmp(id, "0x", 2) == 0 ? strtol(id + 2, NULL, 16) : strtol(id, NULL, 10);
}
#define MY_ID my_id()

/* FIFOs: the server's FIFO, and the 160-byte record of requests and replies. */
#define SERVER_FIFO ".fifo"
struct record {
    char fifo_name[32];      /* bytes 0..32: the reply FIFO, ".fifo<PID>", NUL-terminated */
    char text[128];          /* bytes 32..160: the message, NUL-terminated */
};

/* Message queue: its key, the two types, the message. */
#define MSG_KEY (0x8000 + MY_ID)
#define REQUEST 1
#define REPLY 2
struct msg {
    long mtype;
    char mtext[128];
};
/* The C sends and receives sizeof(struct msg) = 136 bytes, though msgsnd's and msgrcv's size
 * counts the text only: 8 bytes from past the struct travel with each message, and msgrcv may
 * write 8 bytes past it. Here those 8 bytes are room of our own, so the bug stays on the wire. */
struct padded_msg {
    struct msg msg;
    char past_the_end[8];
};

/* Shared memory: its key and size. An int flag at offset 0 (0 empty, 1 a request is waiting),
 * the text from offset 4. */
#define SHM_KEY (0x9000 + MY_ID)
#define SHM_SIZE 1024

/* What a program owns and removes on its way out (set it once the object is made). */
static void (*remove_owned)(void);

/* Says what failed (perror), removes what the program owns, and exits 1. */
static inline void fail(const char *what)
{
    perror(what);
    if (remove_owned)
        remove_owned();
    exit(1);
}

static inline void stop(int sig)
{
    (void)sig;
    if (remove_owned)
        remove_owned(); /* a system call: safe in a handler */
    _exit(0);
}

/* SIGINT or SIGTERM: remove what the program owns and end (a server stopped by Ctrl-C). */
static inline void stop_on_signals(void)
{
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
}

/* The C server's sleep(1) before it removes its object, hoping the client has read the reply
 * by then: $CPEER_LINGER seconds here (default 1, fractions allowed), so that a test can keep a
 * live server on its key while it tries something. */
static inline void linger(void)
{
    const char *text = getenv("CPEER_LINGER");
    double seconds = text ? atof(text) : 1.0;
    struct timespec pause = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
    nanosleep(&pause, NULL);
}

#endif
