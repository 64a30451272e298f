;; Grows its memory by PAGES pages when instantiated and touches every page,
;; so the memory is really resident (not only reserved).
(module
  (memory 1)
  (func $grow (local $addr i32) (local $end i32)
    (drop (memory.grow (i32.const PAGES)))
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (block $done
      (loop $touch
        (br_if $done (i32.ge_u (local.get $addr) (local.get $end)))
        (i32.store8 (local.get $addr) (i32.const 1))
        (local.set $addr (i32.add (local.get $addr) (i32.const 4096)))
        (br $touch))))
  (start $grow))
