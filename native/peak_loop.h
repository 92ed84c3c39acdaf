// The body of every peak loop (peak_<isa>.cc): 12 independent accumulator
// chains of vector type T kept in registers, each advanced once per
// iteration by one instruction written as inline asm (the compiler can
// neither merge nor drop them; latency 4 x 2 pipes needs >= 8 chains).
//   INSN: the instruction, "%0" the accumulator, "%1" x, "%2" y;
//   ACC / IN: the asm constraints of the accumulator ("+x") and inputs ("x");
//   OPS: operations per instruction (2 per multiply-add lane).
// Use inside a function double f(int64_t iters) { QF_PEAK_BODY(...) }.
#pragma once
#include <cstdint>

#define QF_PEAK_STEP(INSN, ACC, IN, a) __asm__ volatile(INSN : ACC(a) : IN(x), IN(y));
#define QF_PEAK_BODY(T, INIT, X, Y, INSN, ACC, IN, OPS)                                                      \
  T a0 = INIT, a1 = INIT, a2 = INIT, a3 = INIT, a4 = INIT, a5 = INIT, a6 = INIT, a7 = INIT, a8 = INIT,      \
    a9 = INIT, a10 = INIT, a11 = INIT;                                                                       \
  const T x = X, y = Y;                                                                                      \
  for (int64_t i = 0; i < iters; i++) {                                                                      \
    QF_PEAK_STEP(INSN, ACC, IN, a0) QF_PEAK_STEP(INSN, ACC, IN, a1) QF_PEAK_STEP(INSN, ACC, IN, a2)          \
    QF_PEAK_STEP(INSN, ACC, IN, a3) QF_PEAK_STEP(INSN, ACC, IN, a4) QF_PEAK_STEP(INSN, ACC, IN, a5)          \
    QF_PEAK_STEP(INSN, ACC, IN, a6) QF_PEAK_STEP(INSN, ACC, IN, a7) QF_PEAK_STEP(INSN, ACC, IN, a8)          \
    QF_PEAK_STEP(INSN, ACC, IN, a9) QF_PEAK_STEP(INSN, ACC, IN, a10) QF_PEAK_STEP(INSN, ACC, IN, a11)        \
  }                                                                                                          \
  volatile T sink;                                                                                           \
  sink = a0; sink = a1; sink = a2; sink = a3; sink = a4; sink = a5;                                          \
  sink = a6; sink = a7; sink = a8; sink = a9; sink = a10; sink = a11;                                        \
  (void)sink;                                                                                                \
  return static_cast<double>(iters) * 12 * (OPS);
