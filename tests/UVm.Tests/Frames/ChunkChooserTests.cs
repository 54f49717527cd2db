using NUnit.Framework;
using UVm.Frames;

namespace UVm.Tests.Frames;

/// <summary>
/// The pool's policy of where frames are carved from, alone over a bitmap: one current chunk at
/// a time, untouched chunks in turn, large runs on chunk boundaries, reserved chunks last.
/// </summary>
public sealed class ChunkChooserTests
{
    private const int Chunk = FramePool.ChunkFrames;

    private static (FrameBitmap Bitmap, ChunkChooser Chooser) New(int chunks)
    {
        var bitmap = new FrameBitmap((ulong)chunks * Chunk);
        return (bitmap, new ChunkChooser(bitmap));
    }

    /// <summary>What the pool does: choose, then mark.</summary>
    private static ulong Take(FrameBitmap bitmap, ChunkChooser chooser, ulong count)
    {
        Assert.That(chooser.TryChoose(count, out ulong first), Is.True, $"a run of {count} is free");
        bitmap.Mark(first, count);
        return first;
    }

    [Test]
    public void Single_frames_fill_one_chunk_in_order_then_the_next()
    {
        (FrameBitmap b, ChunkChooser c) = New(3);
        Assert.That(c.CurrentChunk, Is.EqualTo(-1));
        for (int i = 0; i < Chunk; i++) Assert.That(Take(b, c, 1), Is.EqualTo((ulong)i));
        Assert.That(c.CurrentChunk, Is.Zero);
        Assert.That(Take(b, c, 1), Is.EqualTo((ulong)Chunk), "the next untouched chunk");
        Assert.That(c.CurrentChunk, Is.EqualTo(1));
    }

    [Test]
    public void A_run_of_a_chunk_or_more_takes_whole_untouched_chunks()
    {
        (FrameBitmap b, ChunkChooser c) = New(6);
        Assert.That(Take(b, c, 3), Is.Zero, "chunk 0 becomes the current one");
        Assert.That(Take(b, c, Chunk), Is.EqualTo((ulong)Chunk), "not in the current chunk: the next whole one");
        Assert.That(Take(b, c, Chunk + 1), Is.EqualTo(2UL * Chunk), "two whole chunks");
        Assert.That(b.UsedIn(3), Is.EqualTo(1));
        Assert.That(Take(b, c, 1), Is.EqualTo(3UL), "small ones go on in the current chunk");
        Assert.That(c.TryChoose(3UL * Chunk, out _), Is.False, "chunk 3 is touched: only chunks 4 and 5 are whole");
    }

    [Test]
    public void Holes_of_partly_used_chunks_serve_once_no_chunk_is_untouched()
    {
        (FrameBitmap b, ChunkChooser c) = New(2);
        b.Mark(0, 2UL * Chunk);
        b.Clear(Chunk + 100, 4);
        Assert.That(Take(b, c, 4), Is.EqualTo((ulong)Chunk + 100));
        Assert.That(c.CurrentChunk, Is.EqualTo(1), "the chunk with the hole becomes the current one");
        Assert.That(c.TryChoose(1, out _), Is.False, "the pool is full");
    }

    [Test]
    public void Reserved_chunks_are_left_alone_while_other_frames_are_free_and_taken_last()
    {
        (FrameBitmap b, ChunkChooser c) = New(3);
        int reserved = c.TryReserve();
        Assert.That(reserved, Is.Zero);
        Assert.That(c.ReservedChunks, Is.EqualTo(1));
        Assert.That(c.IsReserved(0), Is.True);
        Assert.That(Take(b, c, 1) / Chunk, Is.EqualTo(1UL), "not the reserved chunk");
        Assert.That(Take(b, c, Chunk) / Chunk, Is.EqualTo(2UL));
        for (int i = 1; i < Chunk; i++) Take(b, c, 1); // fills chunk 1
        Assert.That(Take(b, c, 1), Is.Zero, "the last resort: a free frame of the reserved chunk");
        Assert.That(c.CurrentChunk, Is.EqualTo(1), "the reserved chunk is not made the current one");
        c.Unreserve(reserved);
        Assert.That(c.ReservedChunks, Is.Zero);
        Assert.That(Take(b, c, 1), Is.EqualTo(1UL), "once given back, an ordinary hole");
    }

    [Test]
    public void A_whole_chunk_run_takes_reserved_chunks_only_when_nothing_else_fits()
    {
        (FrameBitmap b, ChunkChooser c) = New(3);
        Assert.That(c.TryReserve(), Is.Zero);
        Assert.That(Take(b, c, 2UL * Chunk), Is.EqualTo((ulong)Chunk), "chunks 1 and 2, around the reservation");
        b.Clear(Chunk, 2UL * Chunk);
        Assert.That(Take(b, c, 3UL * Chunk), Is.Zero, "all three, the reserved one included");
    }

    [Test]
    public void A_reservation_takes_an_untouched_chunk_never_the_current_one()
    {
        (FrameBitmap b, ChunkChooser c) = New(3);
        Assert.That(Take(b, c, 1), Is.Zero);
        b.Clear(0, 1); // the current chunk is empty again
        Assert.That(c.TryReserve(), Is.EqualTo(1), "chunk 0 is the current one");
        Assert.That(c.TryReserve(), Is.EqualTo(2));
        Assert.That(c.TryReserve(), Is.EqualTo(-1), "chunk 0 is the current one: none left");
        Assert.That(c.ReservedChunks, Is.EqualTo(2));
    }

    [Test]
    public void Giving_back_a_reservation_that_is_not_held_throws()
    {
        (_, ChunkChooser c) = New(2);
        Assert.Throws<InvalidOperationException>(() => c.Unreserve(1));
        Assert.That(c.TryReserve(), Is.Zero);
        c.Unreserve(0);
        Assert.Throws<InvalidOperationException>(() => c.Unreserve(0));
        Assert.That(c.ReservedChunks, Is.Zero);
    }
}
