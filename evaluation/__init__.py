"""Safety evaluation harness: policies' greedy answers to held-out harmful, benign and
XSTest prompts, judged by string-match refusal judges validated against XSTest's human
labels, with capability measures, contamination checks, intervals and paired tests.

    python -m evaluation --policy base=smollm2-135m-instruct --policy trained=runs/x/final --out runs/eval
    python -m evaluation score-sheet runs/eval/blind_sample.csv --key runs/eval/blind_key.csv

See evaluation/README.md.
"""
