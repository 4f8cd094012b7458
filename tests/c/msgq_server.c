/*
 * msgq_server — a C server of the message queue pair (msgq1/msgq2), for the tests: the course's
 * protocol spoken as its C server speaks it, written from SPEC.md.
 *
 * It makes the queue 0x8000+MY_ID (or uses the one there), takes one message of ANY type (type
 * 0, as the C does), prints "Received request: <text>.....", sends a type-2 reply "This is a
 * reply from <pid>." and prints "Replied.". Then it lingers (the C's sleep(1), see linger())
 * and removes the queue. Both messages go with size sizeof(struct msg) = 136, the C's bug (see
 * struct padded_msg). SIGINT or SIGTERM removes the queue and ends it.
 */
#include <sys/ipc.h>
#include <sys/msg.h>

#include "cpeer.h"

#define MODE 0600            /* of the queue we make */

static int qid;

static void remove_queue(void)
{
    msgctl(qid, IPC_RMID, NULL);
}

int main(void)
{
    struct padded_msg request, reply;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */
    stop_on_signals();

    if ((qid = msgget(MSG_KEY, IPC_CREAT | MODE)) < 0)
        fail("msgget");
    remove_owned = remove_queue;

    if (msgrcv(qid, &request.msg, sizeof(struct msg), 0, 0) < 0)
        fail("msgrcv");
    printf("Received request: %.*s.....", (int)sizeof request.msg.mtext, request.msg.mtext);

    memset(&reply, 0xa5, sizeof reply); /* stack garbage, made certain */
    reply.msg.mtype = REPLY;
    sprintf(reply.msg.mtext, "This is a reply from %d.", (int)getpid());
    if (msgsnd(qid, &reply.msg, sizeof(struct msg), 0) < 0)
        fail("msgsnd");
    printf("Replied.\n");

    linger();
    remove_owned = NULL;
    if (msgctl(qid, IPC_RMID, NULL) < 0)
        fail("msgctl(IPC_RMID)");
    return 0;
}
