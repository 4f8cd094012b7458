/*
 * sipc_client — a C client of the shared memory pair (sipc1/sipc2), for the tests: the course's
 * protocol spoken as its C client speaks it, written from SPEC.md.
 *
 * The segment 0x9000+MY_ID (1024 bytes; an int flag at offset 0, the text from offset 4) is
 * made by whichever side comes first. The client writes "This is a request from <pid>.", sets
 * the flag to 1, prints "Sent a request.....", waits with a plain loop while the flag is 1,
 * prints "Received reply: <text>" and detaches. It never removes the segment: the server does.
 *
 * The wait is `while (*pInt == 1) ;` on a plain int, as in the C: any value but 1 ends it, so a
 * server that writes anything else there before its reply is complete has the client read back
 * its own request as the reply. Build with -O0, as the course's programs were: the loop then
 * reads the flag from memory on every turn (with -O2 it reads it once and never ends; labs.md
 * tells that story).
 */
#include <sys/ipc.h>
#include <sys/shm.h>

#include "cpeer.h"

#define MODE 0600            /* of the segment, if we make it */

int main(void)
{
    char *ptr, *text;
    int *pInt;
    int shmid;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */

    if ((shmid = shmget(SHM_KEY, SHM_SIZE, IPC_CREAT | MODE)) < 0)
        fail("shmget");
    if ((ptr = shmat(shmid, NULL, 0)) == (void *)-1)
        fail("shmat");
    pInt = (int *)ptr;
    text = ptr + sizeof(int);

    sprintf(text, "This is a request from %d.", (int)getpid());
    *pInt = 1;
    printf("Sent a request.....");

    while (*pInt == 1)
        ;
    printf("Received reply: %.*s\n", SHM_SIZE - (int)sizeof(int), text);

    shmdt(ptr);
    return 0;
}
