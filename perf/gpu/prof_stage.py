"""Profile a `silentzone stage` command for a fixed number of seconds: python3 prof_stage.py SECS ARGS..."""
import cProfile, pstats, signal, sys
secs = int(sys.argv[1]); sys.argv = ["silentzone"] + sys.argv[2:]
class Stop(Exception): pass
def h(*a): raise Stop()
signal.signal(signal.SIGALRM, h); signal.alarm(secs)
from silentzone.cli import main
p = cProfile.Profile(); p.enable()
try:
    main()
except (Stop, SystemExit):
    pass
p.disable(); pstats.Stats(p).sort_stats("cumtime").print_stats(35)
