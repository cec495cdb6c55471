/* LD_PRELOAD shim for the llama.cpp-on-CUDA diagnosis: on SIGSEGV/SIGBUS/SIGABRT it writes the C
 * backtrace of the faulting thread to stderr (glibc backtrace_symbols_fd: "lib(+0xOFF)" or
 * "lib(sym+0xOFF)"; llama_cuda_diag.sh resolves the offsets with addr2line), then dies by the same
 * signal. Python's faulthandler (-X faulthandler) chains to it after its own Python traceback.
 *   gcc -O1 -shared -fPIC -o /tmp/segv_bt.so perf/gpu/segv_bt.c */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void handler(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    char msg[160];
    int n = snprintf(msg, sizeof msg, "\n=== segv_bt: signal %d at address %p, thread %ld ===\n", sig,
                     si ? si->si_addr : NULL, (long)gettid());
    write(2, msg, (size_t)n);
    void *frames[96];
    int k = backtrace(frames, 96);
    backtrace_symbols_fd(frames, k, 2);
    write(2, "=== segv_bt: end ===\n", 21);
    signal(sig, SIG_DFL);
    raise(sig);
}

__attribute__((constructor)) static void segv_bt_init(void) {
    void *warm[2];
    backtrace(warm, 2); /* loads libgcc_s now, not inside the handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
}
