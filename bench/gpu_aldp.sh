#!/bin/bash
# ALDP 1200 -> 755.95 -> 555.52 -> 300 K at GPU scale: the MLP-era workflow's commands chained, kept to
# reproduce the 2026-11-23 figures (docs/RESULTS.md). For today's pipeline use bench/device_plan.py,
# which writes the workflow's own commands for any config.
# Usage: OUT=results/gpu_aldp bash bench/gpu_aldp.sh   (then pita evaluate the rung_3.h5 it writes)
export PYTHONUNBUFFERED=1
# on an offline GPU machine, wheels of openmm and mdtraj (python 3.12) carried in .whl/
[ -d .whl ] && { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1; }
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
OUT=${OUT:-results/gpu_aldp}; mkdir -p $OUT
P="python3 -m pita.cli"
R=/tmp/run; mkdir -p $R; LOG=$OUT/gpu_aldp.log
T0=$(date +%s); el() { echo "### $1 elapsed $(( $(date +%s) - T0 )) s" | tee -a $LOG; }
TEMPS=(1200.0 755.95 555.52 300.0)
NP=${NP:-10000}; TRAIN=${TRAIN:-4000}; TORS=${TORS:-400}
$P md --system alanine_dipeptide --temperature 1200 --rung 0 --n-samples 50000 --replicas 1024 --stride-steps 200 \
  --equilibration-steps 10000 --engine torch --device cuda --seed 0 --out $R/rung_0.h5 >> $LOG 2>&1; el md
for k in 0 1 2; do
  init=""; [ $k -gt 0 ] && init="--init $R/model_$((k-1)).pt"
  $P train --samples $R/rung_$k.h5 --system alanine_dipeptide $init --config-json "{\"backbone\": \"mlp\", \"batch_size\": 512, \"lr\": 0.001, \"steps\": $TRAIN}" \
    --device cuda --seed $((1000*k+1)) --no-progress --work-dir $R/work_$k --out $R/model_$k.pt --losses-csv $R/losses_$k.csv >> $LOG 2>&1; el train_$k
  n=$((k+1))
  $P anneal --checkpoint $R/model_$k.pt --samples-in $R/rung_$k.h5 --system alanine_dipeptide --temperature ${TEMPS[$n]} \
    --n-particles $NP --n-steps 200 --resample-threshold 0.5 --divergence hutchinson --batch-size $NP --device cuda \
    --seed $((1000*n+2)) --rung $n --out $R/weighted_$n.h5 --diagnostics $R/anneal_$n.json >> $LOG 2>&1; el anneal_$n
  $P relax --samples $R/weighted_$n.h5 --system alanine_dipeptide --temperature ${TEMPS[$n]} --n-out $NP --n-steps 200 \
    --torsion-moves $TORS --checkpoint $R/model_$k.pt --device cuda --seed $((1000*n+3)) --rung $n \
    --diagnostics $R/relax_$n.json --out $R/rung_$n.h5 >> $LOG 2>&1; el relax_$n
  cp $R/rung_$n.h5 $OUT/ 2>/dev/null
done
tar czf $OUT/diag.tgz -C $R $(cd $R; ls *.json *.csv 2>/dev/null)
