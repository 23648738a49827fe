/**
 * The bounded FIFO behind each push stream's queue (contract §7: the queue
 * size is the stream's burst budget).
 */
import { describe, expect, it } from "vitest";
import { BoundedQueue } from "../runtime/push/bounded-queue.js";

/** Everything left in `queue`, oldest first. */
function drain<Item>(queue: BoundedQueue<Item>): Item[] {
  const items: Item[] = [];
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) items.push(item);
  return items;
}

describe("BoundedQueue", () => {
  it("hands items back oldest first and undefined once empty", () => {
    const queue = new BoundedQueue<number>(4);
    queue.push(1);
    queue.push(2);
    expect(queue.shift()).toBe(1);
    queue.push(3);
    expect(drain(queue)).toEqual([2, 3]);
    expect(queue.shift()).toBeUndefined();
    expect(queue.size).toBe(0);
  });

  it("is full at its capacity and not before", () => {
    const queue = new BoundedQueue<number>(3);
    for (const item of [1, 2]) queue.push(item);
    expect(queue.full).toBe(false);
    queue.push(3);
    expect(queue.full).toBe(true);
    expect(queue.size).toBe(3);
    queue.shift();
    expect(queue.full).toBe(false);
  });

  // The ring starts small and doubles: order must survive growing while wrapped.
  it("keeps the order while it grows past its first slots with the ring wrapped", () => {
    const queue = new BoundedQueue<number>(100);
    for (let item = 0; item < 6; item++) queue.push(item);
    expect([queue.shift(), queue.shift(), queue.shift()]).toEqual([0, 1, 2]);
    for (let item = 6; item < 40; item++) queue.push(item);
    expect(queue.size).toBe(37);
    expect(drain(queue)).toEqual(Array.from({ length: 37 }, (_, index) => index + 3));
  });

  it("holds exactly its capacity when that is not a power of two", () => {
    const queue = new BoundedQueue<number>(11);
    for (let item = 0; item < 11; item++) queue.push(item);
    expect(queue.full).toBe(true);
    expect(drain(queue)).toEqual(Array.from({ length: 11 }, (_, index) => index));
  });

  it("drops everything on clear and takes new items after", () => {
    const queue = new BoundedQueue<string>(2);
    queue.push("a");
    queue.push("b");
    queue.clear();
    expect(queue.size).toBe(0);
    expect(queue.full).toBe(false);
    queue.push("c");
    expect(drain(queue)).toEqual(["c"]);
  });
});
