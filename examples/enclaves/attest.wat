;; attest: ECALL `report` returns an EREPORT for a given TARGETINFO; `verify_report` returns the REPORT key so the host can check a REPORT's CMAC.
;;
;; `verify_report` does not verify anything itself: AES-128-CMAC is too much to write in
;; WebAssembly text. It derives EGETKEY(REPORT_KEY, KEYID = REPORT.KEYID) and copies the 16-byte
;; key out; the caller checks REPORT.MAC = AES-128-CMAC(key, REPORT[0..384)). Handing a key out of
;; the enclave defeats its purpose: this is for demonstration and testing only.
;;
;; Results: bytes written; -2 = output buffer too small; -3 = bad input.
(module
  (import "vsgx" "copy_in" (func $copy_in (param i32 i64 i32)))
  (import "vsgx" "copy_out" (func $copy_out (param i64 i32 i32)))
  (import "vsgx" "egetkey" (func $egetkey (param i32 i32) (result i64)))
  (import "vsgx" "ereport" (func $ereport (param i32 i32 i32)))
  (import "env" "memory" (memory 1))

  ;; Linear-memory layout (ENCLU operands keep their architectural alignment):
  ;;   0x0000 TARGETINFO  512 bytes, 512-aligned
  ;;   0x0200 REPORTDATA   64 bytes, 128-aligned
  ;;   0x0400 REPORT      432 bytes, 512-aligned (EREPORT output)
  ;;   0x0600 KEYREQUEST  512 bytes, 512-aligned
  ;;   0x0800 key          16 bytes, 16-aligned
  ;;   0x1000 REPORT to verify (432 bytes)
  (global $targetinfo i32 (i32.const 0x0000))
  (global $reportdata i32 (i32.const 0x0200))
  (global $report i32 (i32.const 0x0400))
  (global $keyrequest i32 (i32.const 0x0600))
  (global $key i32 (i32.const 0x0800))
  (global $input_report i32 (i32.const 0x1000))

  ;; Whether any byte in [p, end) is non-zero (p and end multiples of 8).
  (func $any_nonzero (param $p i32) (param $end i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i64.ne (i64.load (local.get $p)) (i64.const 0))
          (then (return (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $next)))
    (i32.const 0))

  ;; Input: TARGETINFO (512 bytes) ‖ REPORTDATA (0 to 64 bytes, zero-padded). Output: the
  ;; 432-byte REPORT, MACed for the target enclave.
  (func (export "ecall_report") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (local $p i32)
    (if (i32.or (i64.lt_u (local.get $in_len) (i64.const 512)) (i64.gt_u (local.get $in_len) (i64.const 576)))
      (then (return (i64.const -3))))
    (if (i64.lt_u (local.get $out_cap) (i64.const 432))
      (then (return (i64.const -2))))
    (call $copy_in (global.get $targetinfo) (local.get $in) (i32.const 512))
    ;; Reserved TARGETINFO bytes (48..50, 56..64, 128..512) must be zero, or EREPORT faults (#GP).
    (if (i32.or
          (i32.or
            (i32.load16_u offset=48 (global.get $targetinfo))
            (i64.ne (i64.load offset=56 (global.get $targetinfo)) (i64.const 0)))
          (call $any_nonzero (i32.add (global.get $targetinfo) (i32.const 128)) (i32.add (global.get $targetinfo) (i32.const 512))))
      (then (return (i64.const -3))))
    ;; REPORTDATA: zero, then the caller's bytes.
    (local.set $p (global.get $reportdata))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (i32.add (global.get $reportdata) (i32.const 64))))
        (i64.store (local.get $p) (i64.const 0))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $next)))
    (call $copy_in (global.get $reportdata) (i64.add (local.get $in) (i64.const 512))
      (i32.sub (i32.wrap_i64 (local.get $in_len)) (i32.const 512)))
    (call $ereport (global.get $targetinfo) (global.get $reportdata) (global.get $report))
    (call $copy_out (local.get $out) (global.get $report) (i32.const 432))
    (i64.const 432))

  ;; Input: a 432-byte REPORT whose TARGETINFO named this enclave. Output: the 16-byte REPORT key
  ;; for its KEYID (see the header comment).
  (func (export "ecall_verify_report") (param $in i64) (param $in_len i64) (param $out i64) (param $out_cap i64) (result i64)
    (if (i64.ne (local.get $in_len) (i64.const 432))
      (then (return (i64.const -3))))
    (if (i64.lt_u (local.get $out_cap) (i64.const 16))
      (then (return (i64.const -2))))
    (call $copy_in (global.get $input_report) (local.get $in) (i32.const 432))
    ;; KEYREQUEST: KEYNAME = REPORT_KEY (3), KEYID @40 ← REPORT.KEYID @384; everything else zero.
    (i32.store16 offset=0 (global.get $keyrequest) (i32.const 3))
    (i64.store offset=40 (global.get $keyrequest) (i64.load offset=384 (global.get $input_report)))
    (i64.store offset=48 (global.get $keyrequest) (i64.load offset=392 (global.get $input_report)))
    (i64.store offset=56 (global.get $keyrequest) (i64.load offset=400 (global.get $input_report)))
    (i64.store offset=64 (global.get $keyrequest) (i64.load offset=408 (global.get $input_report)))
    (if (i64.ne (call $egetkey (global.get $keyrequest) (global.get $key)) (i64.const 0))
      (then (return (i64.const -3))))
    (call $copy_out (local.get $out) (global.get $key) (i32.const 16))
    (i64.store offset=0 (global.get $key) (i64.const 0))
    (i64.store offset=8 (global.get $key) (i64.const 0))
    (i64.const 16)))
