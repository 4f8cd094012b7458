/*
 * sipc_server — a C server of the shared memory pair (sipc1/sipc2), for the tests: the course's
 * protocol spoken as its C server speaks it, written from SPEC.md.
 *
 * The segment 0x9000+MY_ID (1024 bytes; an int flag at offset 0, the text from offset 4) is
 * made by whichever side comes first. The server waits with a plain loop until the flag is 1,
 * prints "Received request: <text>.....", writes "This is a reply from <pid>.", sets the flag
 * to 0 and prints "Replied.". Then it lingers (the C's sleep(1), see linger()) and removes the
 * segment. SIGINT or SIGTERM removes the segment and ends it.
 *
 * Build with -O0, as the course's programs were: the loop `while (*pInt != 1) ;` then reads the
 * flag from memory on every turn. With -O2 the compiler reads it once and the loop never ends
 * (labs.md tells that story); the Rust programs use an atomic instead.
 */
#include <sys/ipc.h>
#include <sys/shm.h>

#include "cpeer.h"

#define MODE 0600            /* of the segment, if we make it */

static int shmid;

static void remove_segment(void)
{
    shmctl(shmid, IPC_RMID, NULL);
}

int main(void)
{
    char *ptr, *text;
    int *pInt;

    setvbuf(stdout, NULL, _IONBF, 0); /* each part of the line shows when printed */
    stop_on_signals();

    if ((shmid = shmget(SHM_KEY, SHM_SIZE, IPC_CREAT | MODE)) < 0)
        fail("shmget");
    remove_owned = remove_segment;
    if ((ptr = shmat(shmid, NULL, 0)) == (void *)-1)
        fail("shmat");
    pInt = (int *)ptr;
    text = ptr + sizeof(int);

    while (*pInt != 1)
        ;
    printf("Received request: %.*s.....", SHM_SIZE - (int)sizeof(int), text);
    sprintf(text, "This is a reply from %d.", (int)getpid());
    *pInt = 0;
    printf("Replied.\n");

    linger();
    remove_owned = NULL;
    if (shmctl(shmid, IPC_RMID, NULL) < 0)
        fail("shmctl(IPC_RMID)");
    shmdt(ptr);
    return 0;
}
