#!/usr/bin/env bash
# bench/gpu.sh: issue #14 goal 7 measured in one go on a lent GPU (at most 10 min on an H200, 6-8 expected):
# bench.inference on cuda with fp32, bf16 and fp16 timed in turn (text and text+picture at batch 64, with
# label agreement), its full tables (batch 1/64/256) in fp32 and bf16, the network in torch.compile at the
# auto precision, then a short bench.pipeline (full speed and half load) with SENTISTREAM_DEVICE=cuda;
# torch encoders and cudnn.benchmark throughout.  Entries go to bench/RESULTS.md as every bench writes
# them; with $OUT set (the device tool) the new entries are also copied to $OUT/gpu-results.md and the
# log to $OUT/gpu.log, to be appended to bench/RESULTS.md here.
#
# The lent machine has PyTorch but not all our packages, reaches no registry, and a call carries at most
# 64 MiB, so the packages travel in parts (bench/gpu_bundle.py), one device call each, back to back (a
# machine stays warm only 30 s after a call):
#   here:   .venv/bin/python -m bench.gpu_bundle          # .gpu/site.sha256 + .gpu/site.tar.gz.part-a?
#   device: command "bash bench/gpu.sh receive"  carry [".gpu/site.sha256", ".gpu/site.tar.gz.part-aa"]
#           (it lists the parts still missing; once all are there it unpacks them into /tmp)
#           ... the same for each part but the last ...
#           command "bash bench/gpu.sh run"      carry [".gpu/site.sha256", <the last part>], timeout_s 600
# Here (CPU, tiny sizes: the plumbing, not the speed):
#   bash bench/gpu.sh run --device cpu --small --results-file /tmp/gpu-results.md
#
# Options of run: --device cuda|cpu, --small, --steps precisions,inference,compile,pipeline,
# --precisions "fp32 bf16" (the full tables), --compile-mode default|reduce-overhead (CUDA graphs),
# --results-file FILE.  Each step has a time limit; a failed step is logged and the others still run;
# the exit status says whether any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PARTS_DIR=${GPU_PARTS_DIR:-.gpu}  # where the carried parts land
BUNDLE_DIR=${GPU_BUNDLE_DIR:-/tmp/sentistream-gpu}  # the parts joined and unpacked (lost with the machine)

receive() {  # keep the parts carried so far; say which are missing or damaged; once all are here, unpack
    [ -f "$BUNDLE_DIR/.complete" ] && { echo "bundle unpacked in $BUNDLE_DIR"; return 0; }
    [ -f "$PARTS_DIR/site.sha256" ] || { echo "no $PARTS_DIR/site.sha256: carry it with every part"; return 1; }
    local kept="$BUNDLE_DIR/parts"  # outside the working tree: a later call's copy cannot drop them
    mkdir -p "$kept" && cp "$PARTS_DIR/site.sha256" "$kept/" || return 1
    for part in $(awk '{print $2}' "$PARTS_DIR/site.sha256"); do
        [ -f "$PARTS_DIR/$part" ] && cp "$PARTS_DIR/$part" "$kept/"
    done
    if ! (cd "$kept" && sha256sum --check --quiet site.sha256 >/dev/null 2>&1); then
        (cd "$kept" && sha256sum --check site.sha256 2>&1 | grep -v ": OK$")
        return 1
    fi
    rm -rf "$BUNDLE_DIR/site" "$BUNDLE_DIR/data"
    (cd "$kept" && cat $(awk '{print $2}' site.sha256)) | tar -xz -C "$BUNDLE_DIR" || return 1
    touch "$BUNDLE_DIR/.complete"
    echo "all parts here; unpacked in $BUNDLE_DIR"
}

use_bundle() {  # the unpacked packages and data on the paths
    receive || return 1
    export PYTHONPATH="$BUNDLE_DIR/site${PYTHONPATH:+:$PYTHONPATH}"
    [ -d "$BUNDLE_DIR/data" ] && export SENTISTREAM_DATA_DIR="$BUNDLE_DIR/data"
    return 0
}

run() {
    local device=cuda small=0 steps=precisions,inference,compile,pipeline precisions="fp32 bf16" compile_mode=default
    local results=bench/RESULTS.md
    while [ $# -gt 0 ]; do
        case "$1" in
            --device) device=$2; shift 2 ;;
            --small) small=1; shift ;;
            --steps) steps=$2; shift 2 ;;
            --precisions) precisions=$2; shift 2 ;;
            --compile-mode) compile_mode=$2; shift 2 ;;
            --results-file) results=$2; shift 2 ;;
            *) echo "unknown option $1" >&2; return 2 ;;
        esac
    done
    local python=python3
    if [ -x .venv/bin/python ]; then
        python=.venv/bin/python
    elif [ -f "$PARTS_DIR/site.sha256" ] || [ -f "$BUNDLE_DIR/.complete" ]; then
        use_bundle || { echo "bundle incomplete: see bench/gpu.sh's header" >&2; return 1; }
    fi
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    local log=${OUT:+$OUT/gpu.log}
    log=${log:-/dev/null}
    local before=0
    [ -f "$results" ] && before=$(stat -c %s "$results")

    # Sizes: the full run is expected to take 6-8 min on an H200 (estimated, not yet measured); step limits
    # sum to 590 s, inside one device call's 600 s (precisions 120 s, inference 95 s each, compiled 120 s,
    # pipeline 160 s).  --small only checks that every step runs (about 8 min on a loaded 2-core CPU).
    local posts=1024 image_posts=256 batches=1,64,256 repeats=3 rounds=5 limit=95
    local pipeline_args=(--scenarios full,rate --posts 3000 --rate-seconds 20 --bare-posts 1024)
    if [ "$small" = 1 ]; then
        posts=8 image_posts=4 batches=4 repeats=1 rounds=1 limit=300
        pipeline_args=(--scenarios full --posts 24 --bare-posts 8 --bare-repeats 1 --timeout-s 240)
    fi
    local inference_args=(--device "$device" --encoder-runtime torch --posts "$posts" --image-posts "$image_posts"
                          --batch-sizes "$batches" --sort-compare "" --picture-batch 0 --compare-threads ""
                          --repeats "$repeats" --results-file "$results")
    local failed=()
    step() {  # step NAME SECONDS COMMAND...: run it under a time limit, log it, remember a failure
        local name=$1 seconds=$2
        shift 2
        echo "=== $name ($(date -u +%H:%M:%S), limit ${seconds}s): $*" | tee -a "$log"
        timeout --kill-after=10 "$seconds" "$@" 2>&1 | tee -a "$log"
        local status=${PIPESTATUS[0]}
        [ "$status" = 0 ] || { failed+=("$name (exit $status)"); echo "=== $name FAILED: exit $status" | tee -a "$log"; }
        if [ -n "${OUT:-}" ] && [ -f "$results" ]; then  # after every step: a call cut short still brings them
            tail -c +"$((before + 1))" "$results" > "$OUT/gpu-results.md"
        fi
    }
    [ "$device" = cpu ] || nvidia-smi -L 2>&1 | tee -a "$log"
    if [[ ",$steps," == *",precisions,"* ]]; then
        step "precisions interleaved" "$((limit + 25))" "$python" -m bench.inference --device "$device" \
            --compare-precisions fp32,bf16,fp16 --posts "$posts" --image-posts "$image_posts" --repeats "$rounds" \
            --results-file "$results"
    fi
    if [[ ",$steps," == *",inference,"* ]]; then
        for precision in $precisions; do
            local hf=(--skip-hf)
            [ "$precision" = fp32 ] && [ "$small" = 0 ] && hf=(--hf-batch-sizes 64)  # the pipelines users pick, once
            step "inference $precision" "$limit" "$python" -m bench.inference "${inference_args[@]}" \
                --precision "$precision" "${hf[@]}"
        done
    fi
    if [[ ",$steps," == *",compile,"* ]]; then
        step "inference compiled" "$((limit + 25))" "$python" -m bench.inference "${inference_args[@]}" \
            --precision auto --compile "$compile_mode" --modes text --batch-sizes "${batches#1,}" --skip-hf
    fi
    if [[ ",$steps," == *",pipeline,"* ]]; then
        step pipeline "$((limit + 65))" "$python" -m bench.pipeline --device "$device" --precision auto \
            --database embedded "${pipeline_args[@]}" --results-file "$results"
    fi
    if [ ${#failed[@]} -gt 0 ]; then
        echo "failed steps: ${failed[*]}" | tee -a "$log"
        return 1
    fi
    echo "all steps done; results in $results" | tee -a "$log"
}

case "${1:-}" in
    receive) receive ;;
    run) shift; run "$@" ;;
    *) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
