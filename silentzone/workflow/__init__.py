"""The study as a workflow: a Snakemake DAG (Snakefile) of per-quant jobs and stage notebooks.

    silentzone reproduce --study smollm2 --profile smoke --cores 2     (cli.py -> run.reproduce)
    silentzone stage quant --study smollm2 --quant Q4_0 --out ...      (one DAG job, stages.py)
Executor profiles for clusters live in profiles/ (e.g. profiles/slurm/config.yaml).
"""
