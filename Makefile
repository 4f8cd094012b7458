# ipclab — build, run and test the IPC lab exercises.   `make help` lists the targets.
#
# `make NAME` builds one exercise and places it as ./NAME, so the slides' `make pipe && ./pipe`
# works as written. Every target is phony: cargo decides what to rebuild, so an existing ./NAME
# never makes a target look up to date after a source change.

EXERCISES  := pipe sync mymore fifos fifoc msgq1 msgq2 shm sipc1 sipc2 mycp3 mipc
# Programs that are not exercises of the lecture, each a package of its own in the same workspace
# (so that building the exercises never builds them): the benchmark of all its mechanisms
# (bench/) and the live view of one lab's objects (watch/).
EXTRAS     := ipcbench ipcwatch
# ipcclean (make ipcclean) lives in ipcwatch's package: it removes what ipcwatch shows.
PROGRAMS   := $(EXERCISES) $(EXTRAS) ipcclean
CARGO      ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN_DIR    := $(TARGET_DIR)/release
# The lab ID of `make ipcclean`, `make watch`, `make demo` and `make bench`: ID=5, else
# $IPCLAB_ID, else 0 (an empty one is as if unset). It reaches the programs as IPCLAB_ID in their
# environment, the text as typed: never written into a command line, so no shell reads it, and
# taken with $(value ...), so make expands nothing in it either (nor does make export ID itself).
# Each program checks it as it checks --id (a lab ID: decimal or 0x-hex below 0x1000), and a
# bad one is a usage error (exit 2).
LAB_ID     := $(or $(value ID),$(value IPCLAB_ID))
unexport ID
ipcclean watch demo bench: export IPCLAB_ID = $(LAB_ID)

.PHONY: all help demo test setup bench ipcclean watch clean $(PROGRAMS)

all:
	$(CARGO) build --release --workspace --bins
	@for name in $(PROGRAMS); do ln -sfn $(BIN_DIR)/$$name $$name; done

$(EXERCISES):
	$(CARGO) build --release --bin $@
	@ln -sfn $(BIN_DIR)/$@ $@

$(EXTRAS):
	$(CARGO) build --release --package $@ --bin $@
	@ln -sfn $(BIN_DIR)/$@ $@

demo: all
	@./scripts/demo.sh

# The tests mostly wait for the programs they run (each has its own lab ID and directory), so
# more of them run at once than there are CPUs.
TEST_THREADS ?= 8

test:
	@./scripts/setup.sh --check
	$(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)

setup:
	@./scripts/setup.sh

# Timings depend on the machine and its load: not part of `make test`.
bench:
	@./scripts/bench.sh

# Builds ./ipcclean and runs it: removes lab ID's leftovers that no live process uses.
ipcclean:
	@$(CARGO) build --quiet --release --package ipcwatch --bin ipcclean
	@ln -sfn $(BIN_DIR)/ipcclean ipcclean
	@./ipcclean

watch: ipcwatch
	./ipcwatch

clean:
	rm -f $(PROGRAMS)
	$(CARGO) clean

help:
	@echo "make              build every exercise and place it as ./NAME"
	@echo "make NAME         build one exercise: $(EXERCISES)"
	@echo "                  (or a program beside them: $(EXTRAS))"
	@echo "make demo         run every exercise once, in lecture order (pairs included),"
	@echo "                  with lab ID (ID=5, else \$$IPCLAB_ID, else 0)"
	@echo "make test         run the whole test suite (it checks the tools it needs first)"
	@echo "make setup        install the system tools the tests and labs.md use (strace, script, …)"
	@echo "make bench        every benchmark (the pairs, mycp3 against cp, ipcbench and its"
	@echo "                  bare loops) and one table of all figures (BENCH_SIZE_MIB=256 for"
	@echo "                  a smaller mycp3 file; lab ID as for demo)"
	@echo "make ipcclean     remove what killed programs of lab ID left (ID=5, else \$$IPCLAB_ID,"
	@echo "                  else 0): queue 0x8000+ID, segment and semaphore set 0x9000+ID,"
	@echo "                  ./.fifo*, lock files, ipcbench's FIFO directory; never one in use"
	@echo "make watch        show lab ID's objects live (ID as for ipcclean): ./ipcwatch"
	@echo "make clean        remove ./NAME files and build outputs"
