/**
 * A bounded FIFO: a push stream's queue of events its transport has not taken
 * yet (contract §7), whose capacity is the stream's burst budget.
 */

/** Slots a queue starts with; it grows by doubling up to its capacity. */
const INITIAL_SLOTS = 8;

/** A FIFO of at most `capacity` items, in a ring that grows on demand so idle streams hold little memory. */
export class BoundedQueue<Item> {
  private slots: (Item | undefined)[];
  private head = 0;
  private count = 0;

  /** @param capacity items held at most; the queue is {@link full} once it holds that many */
  constructor(readonly capacity: number) {
    this.slots = new Array(Math.min(capacity, INITIAL_SLOTS));
  }

  /** Items queued. */
  get size(): number {
    return this.count;
  }

  /** True once `capacity` items are queued: one more would go past the bound. */
  get full(): boolean {
    return this.count >= this.capacity;
  }

  /** Appends `item` at the tail; the caller checks {@link full} first. */
  push(item: Item): void {
    if (this.count === this.slots.length) this.grow();
    this.slots[(this.head + this.count) % this.slots.length] = item;
    this.count++;
  }

  /** Removes and returns the oldest item; `undefined` when empty. */
  shift(): Item | undefined {
    if (this.count === 0) return undefined;
    const item = this.slots[this.head];
    this.slots[this.head] = undefined;
    this.head = (this.head + 1) % this.slots.length;
    this.count--;
    return item;
  }

  /** Drops every item and the room the queue grew to. */
  clear(): void {
    this.slots = new Array(Math.min(this.capacity, INITIAL_SLOTS));
    this.head = 0;
    this.count = 0;
  }

  private grow(): void {
    const larger: (Item | undefined)[] = new Array(Math.min(this.capacity, this.slots.length * 2));
    for (let index = 0; index < this.count; index++) {
      larger[index] = this.slots[(this.head + index) % this.slots.length];
    }
    this.slots = larger;
    this.head = 0;
  }
}
