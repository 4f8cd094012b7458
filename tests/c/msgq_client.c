/*
 * msgq_client — a C client of the message queue pair (msgq1/msgq2), for the tests: the course's
 * protocol spoken as its C client speaks it, written from SPEC.md.
 *
 * It opens the existing queue 0x8000+MY_ID (it never makes it), sends a type-1 request "This is
 * a request from <pid>.", prints "Sent a request.....", takes the first type-2 message and
 * prints "Received reply: <text>". Both calls use size sizeof(struct msg) = 136, the C's bug
 * (see struct padded_msg): the request carries 8 bytes from past its struct.
 */
#include <sys/ipc.h>
#include <sys/msg.h>

#include "cpeer.h"

int main(void)
{
    struct padded_msg request, reply;
    int qid;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */

    if ((qid = msgget(MSG_KEY, 0)) < 0)
        fail("msgget");

    memset(&request, 0xa5, sizeof request); /* stack garbage, made certain */
    request.msg.mtype = REQUEST;
    sprintf(request.msg.mtext, "This is a request from %d.", (int)getpid());
    if (msgsnd(qid, &request.msg, sizeof(struct msg), 0) < 0)
        fail("msgsnd");
    printf("Sent a request.....");

    if (msgrcv(qid, &reply.msg, sizeof(struct msg), REPLY, 0) < 0)
        fail("msgrcv");
    printf("Received reply: %.*s\n", (int)sizeof reply.msg.mtext, reply.msg.mtext);
    return 0;
}
