/**
 * Model size and cost: parameter counts and FLOPs (2 per multiply-accumulate
 * of the convolutions and linear layers, by shape inference: no data runs).
 */
import { Module } from '../nn/module.js';

/** Number of parameter elements (frozen ones included unless trainableOnly). */
export function countParams(model: Module, trainableOnly = false): number {
  return model.numParams(trainableOnly);
}

/** Multiply-accumulates of one forward pass for the given NHWC input shape. */
export function countMacs(model: Module, inputShape: number[]): number {
  return model.inferShape(inputShape).macs;
}

/**
 * FLOPs of one forward pass (2 per MAC) for an NHWC input shape, by default
 * one 112x112 RGB image.
 */
export function countFlops(model: Module, inputShape: number[] = [1, 112, 112, 3]): number {
  return 2 * countMacs(model, inputShape);
}

/** Output shape of the model for an NHWC input shape. */
export function outputShape(model: Module, inputShape: number[]): number[] {
  return model.inferShape(inputShape).shape;
}
