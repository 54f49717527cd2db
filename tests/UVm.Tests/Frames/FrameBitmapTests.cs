using NUnit.Framework;
using UVm.Frames;

namespace UVm.Tests.Frames;

/// <summary>
/// The used-frame bitmap alone: no pool, no memfd, no space. Runs stay inside one chunk, counts
/// follow every mark and clear, and freed frames are found again.
/// </summary>
public sealed class FrameBitmapTests
{
    private const int Chunk = FramePool.ChunkFrames;

    private static FrameBitmap Bitmap(int chunks) => new((ulong)chunks * Chunk);

    private static ulong FrameOf(int chunk, int index) => (ulong)chunk * Chunk + (ulong)index;

    [Test]
    public void A_new_bitmap_is_all_free()
    {
        FrameBitmap b = Bitmap(3);
        Assert.That(b.TotalFrames, Is.EqualTo(3UL * Chunk));
        Assert.That(b.ChunkCount, Is.EqualTo(3));
        for (int c = 0; c < 3; c++)
        {
            Assert.That(b.UsedIn(c), Is.Zero);
            Assert.That(b.FreeIn(c), Is.EqualTo(Chunk));
        }
        for (ulong f = 0; f < b.TotalFrames; f++) Assert.That(b.IsUsed(f), Is.False);
    }

    [TestCase(0UL)]
    [TestCase(100UL)]
    [TestCase((ulong)Chunk + 1)]
    public void Only_whole_chunks_make_a_bitmap(ulong frames) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new FrameBitmap(frames));

    [Test]
    public void Counts_follow_marks_and_clears_across_a_chunk_edge()
    {
        FrameBitmap b = Bitmap(3);
        b.Mark(FrameOf(0, Chunk - 10), 30); // 10 in chunk 0, 20 in chunk 1
        Assert.That(b.UsedIn(0), Is.EqualTo(10));
        Assert.That(b.UsedIn(1), Is.EqualTo(20));
        Assert.That(b.UsedIn(2), Is.Zero);
        Assert.That(b.IsUsed(FrameOf(0, Chunk - 11)), Is.False);
        Assert.That(b.IsUsed(FrameOf(0, Chunk - 10)), Is.True);
        Assert.That(b.IsUsed(FrameOf(1, 19)), Is.True);
        Assert.That(b.IsUsed(FrameOf(1, 20)), Is.False);

        b.Clear(FrameOf(0, Chunk - 5), 10); // 5 of chunk 0, 5 of chunk 1
        Assert.That(b.UsedIn(0), Is.EqualTo(5));
        Assert.That(b.UsedIn(1), Is.EqualTo(15));
        Assert.That(b.FreeIn(1), Is.EqualTo(Chunk - 15));
        Assert.That(b.IsUsed(FrameOf(0, Chunk - 6)), Is.True);
        Assert.That(b.IsUsed(FrameOf(0, Chunk - 5)), Is.False);
        Assert.That(b.IsUsed(FrameOf(1, 4)), Is.False);
        Assert.That(b.IsUsed(FrameOf(1, 5)), Is.True);
    }

    [Test]
    public void Counts_stay_exact_through_many_random_marks_and_clears()
    {
        const int Chunks = 4;
        FrameBitmap b = Bitmap(Chunks);
        var model = new bool[Chunks * Chunk];
        var random = new Random(12345);
        for (int step = 0; step < 2000; step++)
        {
            int f = random.Next(model.Length);
            if (model[f]) b.Clear((ulong)f, 1);
            else b.Mark((ulong)f, 1);
            model[f] = !model[f];
        }
        for (int c = 0; c < Chunks; c++)
            Assert.That(b.UsedIn(c), Is.EqualTo(model.Skip(c * Chunk).Take(Chunk).Count(u => u)), $"chunk {c}");
        for (int f = 0; f < model.Length; f++)
            Assert.That(b.IsUsed((ulong)f), Is.EqualTo(model[f]), $"frame {f}");
    }

    [Test]
    public void A_run_is_found_lowest_first_inside_its_chunk()
    {
        FrameBitmap b = Bitmap(2);
        Assert.That(b.TryFindRun(1, 1, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 0)));
        b.Mark(FrameOf(1, 0), 3);
        b.Mark(FrameOf(1, 5), 1);
        Assert.That(b.TryFindRun(1, 1, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 3)), "the first free frame");
        Assert.That(b.TryFindRun(1, 2, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 3)), "frames 3 and 4 fit two");
        Assert.That(b.TryFindRun(1, 3, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 6)), "three do not fit before frame 5");
    }

    [Test]
    public void A_run_never_straddles_a_chunk_edge()
    {
        // Free: the last 3 frames of chunk 0 and the first 3 of chunk 1; all else taken.
        FrameBitmap b = Bitmap(2);
        b.Mark(0, (ulong)(2 * Chunk));
        b.Clear(FrameOf(0, Chunk - 3), 6);
        Assert.That(b.TryFindRun(0, 4, out _), Is.False, "6 free frames in a row, but only 3 in chunk 0");
        Assert.That(b.TryFindRun(1, 4, out _), Is.False);
        Assert.That(b.TryFindRun(0, 3, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(0, Chunk - 3)), "a run ending on the chunk's last frame");
        Assert.That(b.TryFindRun(1, 3, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 0)), "a run starting on the chunk's first frame");
        Assert.That(b.TryFindRun(0, 1, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(0, Chunk - 3)));
    }

    [Test]
    public void A_run_across_a_word_edge_inside_a_chunk_is_found()
    {
        FrameBitmap b = Bitmap(1);
        b.Mark(0, Chunk);
        b.Clear(60, 8); // frames 60..67: the end of word 0 and the start of word 1
        Assert.That(b.TryFindRun(0, 8, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(60UL));
        Assert.That(b.TryFindRun(0, 9, out _), Is.False);
    }

    [Test]
    public void A_full_chunk_has_no_run_and_its_neighbours_are_untouched()
    {
        FrameBitmap b = Bitmap(3);
        b.Mark(FrameOf(1, 0), Chunk);
        Assert.That(b.UsedIn(1), Is.EqualTo(Chunk));
        Assert.That(b.FreeIn(1), Is.Zero);
        Assert.That(b.TryFindRun(1, 1, out _), Is.False);
        Assert.That(b.UsedIn(0), Is.Zero);
        Assert.That(b.UsedIn(2), Is.Zero);
        Assert.That(b.TryFindRun(0, Chunk, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(0, 0)));
        Assert.That(b.TryFindRun(2, Chunk, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(2, 0)));
    }

    [Test]
    public void A_run_of_exactly_a_chunk_needs_the_whole_chunk()
    {
        FrameBitmap b = Bitmap(2);
        Assert.That(b.TryFindRun(1, Chunk, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 0)));
        foreach (int taken in new[] { 0, 63, 64, 300, Chunk - 1 })
        {
            b.Mark(FrameOf(1, taken), 1);
            Assert.That(b.TryFindRun(1, Chunk, out _), Is.False, $"frame {taken} taken");
            Assert.That(b.TryFindRun(1, Chunk - 1, out first), Is.EqualTo(taken is 0 or Chunk - 1), $"511 free in a row only around an end frame ({taken})");
            b.Clear(FrameOf(1, taken), 1);
            Assert.That(b.TryFindRun(1, Chunk, out first), Is.True);
            Assert.That(first, Is.EqualTo(FrameOf(1, 0)));
        }
    }

    [Test]
    public void A_cleared_run_is_found_again_where_it_was()
    {
        FrameBitmap b = Bitmap(2);
        b.Mark(0, (ulong)(2 * Chunk));
        Assert.That(b.TryFindRun(1, 1, out _), Is.False);

        b.Clear(FrameOf(1, 200), 1); // a lone frame deep in the chunk (the one-frame search by word)
        Assert.That(b.TryFindRun(1, 1, out ulong first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 200)));
        Assert.That(b.TryFindRun(1, 2, out _), Is.False);
        b.Mark(first, 1);

        b.Clear(FrameOf(1, 400), 16);
        Assert.That(b.TryFindRun(1, 16, out first), Is.True);
        Assert.That(first, Is.EqualTo(FrameOf(1, 400)));
        b.Mark(first, 16);
        Assert.That(b.UsedIn(1), Is.EqualTo(Chunk));
        Assert.That(b.TryFindRun(0, 1, out _), Is.False);
    }

    [Test]
    public void Free_chunks_are_found_from_a_start_and_in_runs()
    {
        FrameBitmap b = Bitmap(8);
        b.Mark(FrameOf(2, 7), 1);           // chunk 2 partly used
        b.Mark(FrameOf(5, 0), Chunk);       // chunk 5 full
        Assert.That(b.FindFreeChunks(0, 1, default), Is.EqualTo(0));
        Assert.That(b.FindFreeChunks(2, 1, default), Is.EqualTo(3), "a partly used chunk is not free");
        Assert.That(b.FindFreeChunks(0, 2, default), Is.EqualTo(0));
        Assert.That(b.FindFreeChunks(1, 2, default), Is.EqualTo(3), "chunks 3 and 4; the run is broken by chunk 2");
        Assert.That(b.FindFreeChunks(0, 3, default), Is.EqualTo(-1), "never more than 2 free in a row");
        Assert.That(b.FindFreeChunks(6, 2, default), Is.EqualTo(6), "the last two chunks");
        Assert.That(b.FindFreeChunks(7, 2, default), Is.EqualTo(-1), "a run does not wrap around");
        Assert.That(b.FindFreeChunks(8, 1, default), Is.EqualTo(-1));
    }

    [Test]
    public void Excluded_chunks_are_skipped_and_break_runs()
    {
        FrameBitmap b = Bitmap(6);
        var excluded = new int[6];
        excluded[0] = 1;
        excluded[3] = 2;
        Assert.That(b.FindFreeChunks(0, 1, excluded), Is.EqualTo(1));
        Assert.That(b.FindFreeChunks(0, 2, excluded), Is.EqualTo(1));
        Assert.That(b.FindFreeChunks(0, 3, excluded), Is.EqualTo(-1), "chunk 3 breaks the run");
        Assert.That(b.FindFreeChunks(0, 3, default), Is.EqualTo(0), "nothing excluded");
        Assert.That(b.FindFreeChunks(2, 2, excluded), Is.EqualTo(4));
    }

    [Test]
    public void Freeing_the_last_frame_of_a_chunk_makes_it_free_again()
    {
        FrameBitmap b = Bitmap(2);
        b.Mark(FrameOf(0, 0), Chunk + 1);
        Assert.That(b.FindFreeChunks(0, 1, default), Is.EqualTo(-1));
        b.Clear(FrameOf(1, 0), 1);
        Assert.That(b.FindFreeChunks(0, 1, default), Is.EqualTo(1));
        b.Clear(FrameOf(0, 0), Chunk);
        Assert.That(b.FindFreeChunks(0, 2, default), Is.EqualTo(0));
        Assert.That(b.UsedIn(0) + b.UsedIn(1), Is.Zero);
    }
}
