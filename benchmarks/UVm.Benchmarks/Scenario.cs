using UVm.Areas;
using UVm.Frames;
using UVm.Io;

namespace UVm.Benchmarks;

/// <summary>
/// What the suites of scenarios share: a failed scenario as a failed row, the samples after the
/// warm-ups, sizes in words, and the stamped pages the area and snapshot suites write and check.
/// </summary>
internal static class Scenario
{
    /// <summary>What a stamped page holds after its index, as the C peers write it.</summary>
    internal const byte StampFill = 0x5A;

    /// <summary>Page <paramref name="i"/> as the suites write it: its index in the first 8 bytes, <see cref="StampFill"/> after.</summary>
    internal static void StampedPage(ulong i, Span<byte> page)
    {
        page.Fill(StampFill);
        BitConverter.TryWriteBytes(page, i);
    }

    /// <summary>Writes every page of <c>[va, va + pages)</c> as <see cref="StampedPage"/> says, 2 MiB per fallible copy.</summary>
    internal static void WriteStamped(AddressSpace space, ulong va, ulong pages)
    {
        const ulong chunkPages = FramePool.ChunkFrames;
        space.Space.Activate();
        var buffer = new byte[chunkPages * Paging.PageSize];
        for (ulong first = 0; first < pages; first += chunkPages)
        {
            ulong n = Math.Min(pages - first, chunkPages);
            for (ulong i = 0; i < n; i++) StampedPage(first + i, buffer.AsSpan((int)(i * Paging.PageSize), (int)Paging.PageSize));
            VmWriter<Fallible> w = space.Space.Writer(va + first * Paging.PageSize, n * Paging.PageSize);
            CopyResult r = w.WriteFallible(buffer.AsSpan(0, (int)(n * Paging.PageSize)));
            if (!r.IsOk) throw new InvalidOperationException($"writing the stamped pages failed after {r.Bytes} bytes: {r.Error}");
        }
    }

    /// <summary>The row <paramref name="measure"/> makes, or a failed row (and the exception on stderr) when it throws.</summary>
    internal static Row Guard(string scenario, Func<Row> measure)
    {
        try
        {
            return measure();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: scenario '{scenario}' failed: {e}");
            return Row.Failed(scenario, e);
        }
    }

    /// <summary>The rows <paramref name="measure"/> makes, or one failed row when it throws.</summary>
    internal static IEnumerable<Row> GuardMany(string scenario, Func<IEnumerable<Row>> measure)
    {
        try
        {
            return measure().ToList();
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"UVm.Benchmarks: scenario '{scenario}' failed: {e}");
            return [Row.Failed(scenario, e)];
        }
    }

    /// <summary>The last <paramref name="reps"/> values (the ones after the Sampler's warm-ups).</summary>
    internal static Samples Counted(List<double> all, int reps) => new(all.Skip(all.Count - reps).ToArray());

    /// <summary>"16 MiB", "1 GiB".</summary>
    internal static string Size(ulong bytes) =>
        bytes >= 1UL << 30 && bytes % (1UL << 30) == 0 ? Program.Inv($"{bytes >> 30} GiB") : Program.Inv($"{(double)bytes / (1UL << 20):0} MiB");

    /// <summary>
    /// Runs <paramref name="run"/> with a fresh pool of <paramref name="poolSize"/> bytes, then
    /// checks that every frame came back and every chunk reservation went (throws otherwise,
    /// putting <paramref name="context"/>'s text first) and disposes the pool. A pool with frames
    /// still in use cannot be disposed; it is left to the process.
    /// </summary>
    internal static T WithPool<T>(ulong poolSize, Func<FramePool, T> run, Func<string>? context = null)
    {
        var pool = new FramePool(poolSize);
        T result;
        try
        {
            result = run(pool);
        }
        catch
        {
            if (pool.FramesInUse == 0) pool.Dispose();
            throw;
        }
        finally
        {
            Spaces.VmSpace.Deactivate();
        }
        pool.Trim();
        try
        {
            CheckEmpty(pool, "after every space and snapshot of the scenario was disposed");
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidOperationException((context?.Invoke() ?? "") + e.Message, e);
        }
        pool.Dispose();
        return result;
    }

    /// <summary>
    /// Throws unless no frame of <paramref name="pool"/> is in use and, with
    /// <paramref name="noReservations"/> (every space disposed), no chunk is reserved.
    /// </summary>
    internal static void CheckEmpty(FramePool pool, string when, bool noReservations = true)
    {
        if (pool.FramesInUse != 0) throw new InvalidOperationException($"{pool.FramesInUse} frames still in use {when}");
        if (noReservations && pool.ReservedChunks != 0) throw new InvalidOperationException($"{pool.ReservedChunks} chunks still reserved {when}");
    }
}
