using FsCheck;
using FsCheck.Fluent;
using NUnit.Framework;
using UVm.Frames;
using UVm.Io;
using static UVm.Tests.Properties.Extremes;

namespace UVm.Tests.Properties;

/// <summary>
/// The frames layer fed extreme integers: pool capacities, segment frame counts, physical
/// addresses, frame indices, the skips and limits of infallible frame readers and writers; and
/// pool operations racing the pool's <see cref="FramePool.Dispose"/>.
/// </summary>
/// <remarks>
/// Each property gets an 8 MiB pool (2048 frames) of its own (a property that corrupts it must
/// not fail the next); it holds a frame with two handles and a segment of three frames in its
/// first chunk, so the other three chunks are entirely free.
/// After every case its frames in use are as they were, and every so often (and after every
/// refusal) it must still hand out its three free chunks in one segment: a refused call must
/// not have marked frames it did not allocate.
/// </remarks>
[TestFixture, NonParallelizable]
public sealed class FrameProperties
{
    private const ulong MiB = 1UL << 20;
    private const ulong PoolBytes = 8 * MiB;
    private const ulong MaxCapacity = 16UL << 40;
    private const ulong FreeChunkFrames = 3 * FramePool.ChunkFrames; // chunks 1..3

    private FramePool _pool = null!;
    private UFrame _held = null!, _heldClone = null!;
    private USegment _heldSegment = null!;
    private FramePool _disposedPool = null!;
    private USegment _disposedSegment = null!;
    private readonly HashSet<ulong> _bigCapacitiesTried = new();
    private readonly Racer _racer = new();
    private int _cases;

    [SetUp]
    public void CreatePool()
    {
        _pool = new FramePool(PoolBytes);
        _held = _pool.AllocFrame();
        _heldClone = _held.Clone();
        _heldSegment = _pool.AllocSegment(3);
        _disposedSegment = _pool.AllocSegment(2);
        _disposedSegment.Dispose();
        _disposedPool = new FramePool(2 * MiB);
        _disposedPool.Dispose();
        Assert.That(_pool.FramesInUse, Is.EqualTo(4));
    }

    [TearDown]
    public void DisposePool()
    {
        _heldSegment.Dispose();
        _heldClone.Dispose();
        _held.Dispose();
        // A property that failed may have left the pool corrupted: it is then left to the process exit.
        if (_pool.FramesInUse == 0) _pool.Dispose();
        else if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Passed)
            Assert.Fail($"the property's pool leaked {_pool.FramesInUse} frames");
    }

    [OneTimeTearDown]
    public void StopRacer() => _racer.Dispose();

    /// <summary>The reference count every frame of the fixture's pool must have between cases.</summary>
    private int ExpectedCount(ulong paddr)
    {
        ulong frame = paddr & ~(Page - 1);
        if (frame == _held.Paddr) return 2;
        if (frame >= _heldSegment.Paddr && frame < _heldSegment.Paddr + _heldSegment.Size) return 1;
        return 0;
    }

    /// <summary>After a case: frames in use as before; after a refusal (and every 32 cases) the free chunks are still allocatable.</summary>
    private void AssertPoolIntact(string call, bool refused)
    {
        if (_pool.FramesInUse != 4) throw new AssertionException($"{call}: frames in use went from 4 to {_pool.FramesInUse}");
        if (!refused && ++_cases % 32 != 0) return;
        Outcome<USegment> all = Run.Of(() => _pool.AllocSegment(FreeChunkFrames));
        if (all.Threw) throw new AssertionException($"{call}: afterwards the pool can no longer allocate its {FreeChunkFrames} free frames in one segment: {all}");
        all.Value!.Dispose();
        if (_pool.FramesInUse != 4) throw new AssertionException($"{call}: frames in use went from 4 to {_pool.FramesInUse} after a check allocation");
    }

    // ---- FramePool(capacity) ---------------------------------------------------------------------------------

    [Test, CancelAfter(120_000)]
    public void Pool_capacity_is_checked_and_a_pool_of_any_valid_capacity_works()
    {
        Gen<ulong> capacities = Gen.Frequency(
            (3, U64(Huge, 2 * Huge, PoolBytes, MaxCapacity, MaxCapacity - Huge, 1UL << 40)),
            (1, Gen.Choose(1, 512).Select(n => (ulong)n * Huge)));
        PropertySuite.Check("FramePool(capacity)", 300, capacities, capacity =>
        {
            string call = $"new FramePool({Hex(capacity)})";
            bool valid = capacity != 0 && capacity % Huge == 0 && capacity <= MaxCapacity;
            // A valid pool above 1 GiB costs a metadata array of its size / 2^18 bytes (512 MiB at
            // 16 TiB): each such capacity once per run.
            if (valid && capacity > (1UL << 30) && !_bigCapacitiesTried.Add(capacity)) return;
            Outcome<FramePool> o = Run.Of(() => new FramePool(capacity));
            bool ok = Contract.For(call)
                .Refuses<ArgumentException>(capacity == 0, "zero capacity")
                .Refuses<ArgumentException>(capacity % Huge != 0, "not a multiple of 2 MiB")
                .Refuses<ArgumentException>(capacity > MaxCapacity, "above 16 TiB")
                .MayRefuse(UVmError.HostNoMemory, valid, "the host refuses the memfd or its mappings")
                .Verify(o);
            if (!ok) return;
            FramePool pool = o.Value!;
            try
            {
                Expect.Equal(pool.Capacity, capacity, call, "Capacity");
                Expect.Equal(pool.TotalFrames, capacity / Page, call, "TotalFrames");
                Expect.Equal(pool.FramesInUse, 0L, call, "FramesInUse of a new pool");
                using UFrame f = pool.AllocFrame();
                Expect.That(f.Paddr < capacity && f.Paddr % Page == 0, call, $"first frame at {Hex(f.Paddr)} is not a frame of the pool");
                Expect.Equal(f.ReferenceCount, 1, call, "reference count of a new frame");
            }
            finally
            {
                pool.Dispose();
            }
        });
    }

    // ---- AllocSegment(frameCount) ------------------------------------------------------------------------------

    [Test, CancelAfter(120_000)]
    public void AllocSegment_of_any_count_allocates_exactly_that_run_or_refuses_and_allocates_nothing()
    {
        ulong total = _pool.TotalFrames;
        Gen<ulong> counts = U64(1, 2, 511, 512, 513, 1024, FreeChunkFrames, total - 4, total, total + 1, ulong.MaxValue / Page, 1UL << 52, 1UL << 55);
        PropertySuite.Check("FramePool.AllocSegment(count)", 1200, counts, count =>
        {
            string call = $"AllocSegment({Hex(count)}) on a pool of {total} frames, 4 in use, 3 chunks free";
            Outcome<USegment> o = Run.Of(() => _pool.AllocSegment(count));
            bool ok = Contract.For(call)
                .Refuses<ArgumentOutOfRangeException>(count == 0, "zero frames")
                .Refuses<ArgumentOutOfRangeException>(count > total, "more frames than the pool has")
                .Refuses(UVmError.NoMemory, count > total, "no such run is free")
                .Refuses(UVmError.NoMemory, count > FreeChunkFrames && count <= total, "no free run that long (512 frames or more start on a chunk boundary)")
                .Verify(o);
            if (ok)
            {
                using USegment s = o.Value!;
                Expect.Equal(s.FrameCount, count, call, "FrameCount");
                Expect.Equal(s.Size, count * Page, call, "Size");
                Expect.That(s.Paddr % Page == 0 && s.Paddr < _pool.Capacity && s.Size <= _pool.Capacity - s.Paddr, call, $"segment [{Hex(s.Paddr)}, +{Hex(s.Size)}) is not inside the pool");
                if (count >= FramePool.ChunkFrames) Expect.That(s.Paddr % Huge == 0, call, $"a segment of {count} frames starts at {Hex(s.Paddr)}, not on a chunk boundary");
                Expect.Equal(_pool.FramesInUse, 4 + (long)count, call, "frames in use with the segment");
                for (ulong i = 0; i < count; i++)
                {
                    ulong paddr = s.Paddr + i * Page;
                    Expect.Equal(ExpectedCount(paddr), 0, call, $"frame {Hex(paddr)} of the segment was already in use");
                    Expect.Equal(_pool.ReferenceCount(paddr), 1, call, $"reference count of frame {i}");
                }
            }
            Expect.Equal(_held.ReferenceCount, 2, call, "reference count of a frame held across the case");
            AssertPoolIntact(call, refused: !ok);
        });
    }

    // ---- ReferenceCount(paddr) -----------------------------------------------------------------------------------

    [Test, CancelAfter(120_000)]
    public void ReferenceCount_of_any_address_is_the_frames_count_or_a_refusal()
    {
        ulong cap = _pool.Capacity;
        var inputs = Gen.Zip(U64(0, _held.Paddr, _heldSegment.Paddr, _heldSegment.Paddr + 2 * Page, cap, cap - Page, _disposedSegment.Paddr),
                             Gen.Frequency((9, Gen.Constant(false)), (1, Gen.Constant(true))));
        PropertySuite.Check("FramePool.ReferenceCount(paddr)", 1500, inputs, t =>
        {
            (ulong paddr, bool disposedPool) = t;
            FramePool pool = disposedPool ? _disposedPool : _pool;
            string call = $"ReferenceCount({Hex(paddr)}) on a {(disposedPool ? "disposed pool" : $"pool of {Hex(cap)} bytes")}";
            // Unfixed, both read outside the pool's metadata mapping: an AccessViolation ends the process.
            if (!PropertySuite.MayRun(disposedPool || paddr >= pool.Capacity)) return;
            Outcome<int> o = Run.Of(() => pool.ReferenceCount(paddr));
            bool ok = Contract.For(call)
                .Refuses<ObjectDisposedException>(disposedPool, "the pool was disposed")
                .Refuses<ArgumentOutOfRangeException>(!disposedPool && paddr >= pool.Capacity, "past the pool")
                .MayRefuse<ArgumentException>(paddr % Page != 0, "not a frame address")
                .Verify(o);
            if (ok) Expect.Equal(o.Value, ExpectedCount(paddr), call, "the frame's reference count");
        });
    }

    // ---- USegment.FrameAt(index) ----------------------------------------------------------------------------------

    [Test, CancelAfter(120_000)]
    public void FrameAt_of_any_index_is_a_new_handle_to_that_frame_or_a_refusal()
    {
        var inputs = Gen.Zip(U64(0, 1, 2, 3, _heldSegment.FrameCount, 1UL << 52, ulong.MaxValue / Page),
                             Gen.Frequency((9, Gen.Constant(false)), (1, Gen.Constant(true))));
        PropertySuite.Check("USegment.FrameAt(index)", 1000, inputs, t =>
        {
            (ulong index, bool disposed) = t;
            USegment seg = disposed ? _disposedSegment : _heldSegment;
            string call = $"FrameAt({Hex(index)}) of a {(disposed ? "disposed " : "")}segment of {seg.FrameCount} frames";
            Outcome<UFrame> o = Run.Of(() => seg.FrameAt(index));
            bool ok = Contract.For(call)
                .Refuses<ObjectDisposedException>(disposed, "the handle was disposed")
                .Refuses<ArgumentOutOfRangeException>(index >= seg.FrameCount, "not below FrameCount")
                .Verify(o);
            if (ok)
            {
                using UFrame f = o.Value!;
                Expect.Equal(f.Paddr, seg.Paddr + index * Page, call, "Paddr of the frame");
                Expect.Equal(f.ReferenceCount, 2, call, "reference count with the new handle");
            }
            AssertPoolIntact(call, refused: false);
            Expect.Equal(_pool.ReferenceCount(_heldSegment.Paddr + Math.Min(index, 2) * Page), 1, call, "reference count after the handle went");
        });
    }

    // ---- infallible readers and writers of frames and segments -------------------------------------------------------

    /// <summary>One step on an infallible reader or writer: Skip, Limit, a value, or a span copy.</summary>
    public readonly record struct CursorStep(char Kind, ulong Arg)
    {
        public override string ToString() => $"{Kind}({Hex(Arg)})";
    }

    [Test, CancelAfter(120_000)]
    public void Infallible_frame_readers_and_writers_move_exactly_as_told_or_refuse_without_moving()
    {
        Gen<CursorStep> step = Gen.Elements('S', 'L', 'V', 'W', 'R', 'C').SelectMany(k => k switch
        {
            'R' or 'C' => BufferLength(3 * (int)Page + 5).Select(n => new CursorStep(k, (ulong)n)),
            'V' or 'W' => Gen.Elements(1UL, 2UL, 4UL, 8UL, 16UL).Select(n => new CursorStep(k, n)),
            _ => U64(1, 7, 8, Page - 8, Page, 3 * Page, 2 * Page).Select(n => new CursorStep(k, n)),
        });
        var inputs = Gen.Zip(Gen.Elements(false, true), Gen.ListOf(step).Select(l => l.Take(8).ToArray()));
        using UFrame frame = _pool.AllocFrame();
        using USegment segment = _pool.AllocSegment(3);
        byte[] frameModel = new byte[Page], segmentModel = new byte[3 * Page];
        PropertySuite.Check("UFrame/USegment infallible Reader/Writer steps", 3000, inputs, t =>
        {
            (bool onSegment, CursorStep[] steps) = t;
            byte[] model = onSegment ? segmentModel : frameModel;
            string call = $"{(onSegment ? "USegment" : "UFrame")} reader and writer, steps {string.Join(" ", steps)}";
            // The reader and the writer each start at byte 0 of the whole frame(s): apply every step to both, as it fits.
            VmReader<Infallible> r = onSegment ? segment.Reader() : frame.Reader();
            VmWriter<Infallible> w = onSegment ? segment.Writer() : frame.Writer();
            ulong rPos = 0, rEnd = (ulong)model.Length, wPos = 0, wEnd = (ulong)model.Length;
            byte tag = (byte)(steps.Length * 37 + 1);
            foreach (CursorStep s in steps)
            {
                string at = $"{call}: at {s}";
                switch (s.Kind)
                {
                    case 'S':
                    {
                        Outcome<bool> or, ow;
                        try { r.Skip(s.Arg); or = Outcome<bool>.Returned(true); }
                        catch (Exception e) { or = Outcome<bool>.Failed(e); }
                        if (Contract.For(at + " Skip on the reader").Refuses<ArgumentOutOfRangeException>(s.Arg > rEnd - rPos, "fewer bytes remain").Verify(or)) rPos += s.Arg;
                        try { w.Skip(s.Arg); ow = Outcome<bool>.Returned(true); }
                        catch (Exception e) { ow = Outcome<bool>.Failed(e); }
                        if (Contract.For(at + " Skip on the writer").Refuses<ArgumentOutOfRangeException>(s.Arg > wEnd - wPos, "less room remains").Verify(ow)) wPos += s.Arg;
                        break;
                    }
                    case 'L':
                        r.Limit(s.Arg);
                        w.Limit(s.Arg);
                        rEnd = rPos + Math.Min(s.Arg, rEnd - rPos);
                        wEnd = wPos + Math.Min(s.Arg, wEnd - wPos);
                        break;
                    case 'V':
                    {
                        int size = (int)s.Arg;
                        Outcome<ulong> ov;
                        try { ov = Outcome<ulong>.Returned(ReadValOfSize(ref r, size)); }
                        catch (Exception e) { ov = Outcome<ulong>.Failed(e); }
                        if (Contract.For(at + " ReadVal").Refuses<ArgumentOutOfRangeException>(rEnd - rPos < (ulong)size, "fewer bytes remain than the value").Verify(ov))
                        {
                            Expect.Equal(ov.Value, ModelValue(model, rPos, size), at, "value read");
                            rPos += (ulong)size;
                        }
                        break;
                    }
                    case 'W':
                    {
                        int size = (int)s.Arg;
                        ulong value = 0x0102030405060708UL * tag++;
                        Outcome<bool> ow;
                        try { WriteValOfSize(ref w, size, value); ow = Outcome<bool>.Returned(true); }
                        catch (Exception e) { ow = Outcome<bool>.Failed(e); }
                        if (Contract.For(at + " WriteVal").Refuses<ArgumentOutOfRangeException>(wEnd - wPos < (ulong)size, "less room than the value").Verify(ow))
                        {
                            for (int i = 0; i < size; i++) model[wPos + (ulong)i] = i < 8 ? (byte)(value >> (8 * i)) : (byte)0;
                            wPos += (ulong)size;
                        }
                        break;
                    }
                    case 'R':
                    {
                        var buf = new byte[s.Arg];
                        int n = r.Read(buf);
                        Expect.Equal((ulong)n, Math.Min(rEnd - rPos, s.Arg), at, "bytes read");
                        Expect.That(buf.AsSpan(0, n).SequenceEqual(model.AsSpan((int)rPos, n)), at, "bytes read differ from the frame's");
                        rPos += (ulong)n;
                        break;
                    }
                    case 'C':
                    {
                        var buf = new byte[s.Arg];
                        buf.AsSpan().Fill(tag++);
                        int n = w.Write(buf);
                        Expect.Equal((ulong)n, Math.Min(wEnd - wPos, s.Arg), at, "bytes written");
                        buf.AsSpan(0, n).CopyTo(model.AsSpan((int)wPos));
                        wPos += (ulong)n;
                        break;
                    }
                }
                Expect.Equal(r.Remain, rEnd - rPos, at, "reader's Remain");
                Expect.Equal(w.Avail, wEnd - wPos, at, "writer's Avail");
            }
            // What the frame holds now is what the model says.
            var actual = new byte[model.Length];
            VmReader<Infallible> check = onSegment ? segment.Reader() : frame.Reader();
            check.Read(actual);
            Expect.That(actual.AsSpan().SequenceEqual(model), call, "the frame's contents differ from what was written");
        });
        Assert.That(_pool.FramesInUse, Is.EqualTo(4 + 1 + 3));
    }

    private static ulong ReadValOfSize(ref VmReader<Infallible> r, int size) => size switch
    {
        1 => r.ReadVal<byte>(),
        2 => r.ReadVal<ushort>(),
        4 => r.ReadVal<uint>(),
        8 => r.ReadVal<ulong>(),
        _ => (ulong)r.ReadVal<Int128>(),
    };

    private static void WriteValOfSize(ref VmWriter<Infallible> w, int size, ulong value)
    {
        switch (size)
        {
            case 1: w.WriteVal((byte)value); break;
            case 2: w.WriteVal((ushort)value); break;
            case 4: w.WriteVal((uint)value); break;
            case 8: w.WriteVal(value); break;
            default: w.WriteVal((Int128)value); break;
        }
    }

    private static ulong ModelValue(byte[] model, ulong pos, int size)
    {
        ulong v = 0;
        for (int i = 0; i < Math.Min(size, 8); i++) v |= (ulong)model[pos + (ulong)i] << (8 * i);
        return v;
    }

    // ---- a disposed pool --------------------------------------------------------------------------------------------

    [Test, CancelAfter(120_000)]
    public void Trim_of_a_disposed_pool_never_touches_the_descriptor_a_new_pool_got()
    {
        // Frames freed but not yet punched (fewer than a punch batch) when the pool is disposed;
        // a new pool then typically gets the same descriptor number. Trim of the old pool must do
        // nothing (or refuse): never punch holes in the new pool's memfd.
        Gen<int> freed = Gen.Frequency((3, Gen.Elements(1, 2, 3, 64, 511, 512, 513)), (2, Gen.Choose(1, 600)));
        PropertySuite.Check("FramePool.Trim after Dispose", 120, freed, n =>
        {
            string call = $"Trim of a disposed 4 MiB pool with {n} frames freed before Dispose";
            var old = new FramePool(4 * MiB);
            old.AllocSegment((ulong)n).Dispose();
            old.Dispose();
            using var reuse = new PoolUser(new FramePool(4 * MiB), (ulong)n);
            Outcome<bool> o = Run.Of(old.Trim);
            Contract.For(call).MayRefuse<ObjectDisposedException>(true, "the pool was disposed").Verify(o);
            Expect.That(reuse.StillFilled(), call, "the new pool's frames were punched (zeroed) through the old pool's descriptor");
        });
    }

    /// <summary>A pool whose first frames are allocated and filled with a pattern.</summary>
    private sealed class PoolUser : IDisposable
    {
        private readonly FramePool _pool;
        private readonly USegment _seg;

        internal PoolUser(FramePool pool, ulong frames)
        {
            _pool = pool;
            _seg = pool.AllocSegment(frames);
            var fill = new byte[_seg.Size];
            fill.AsSpan().Fill(0xAB);
            VmWriter<Infallible> w = _seg.Writer();
            w.Write(fill);
        }

        internal bool StillFilled()
        {
            var back = new byte[_seg.Size];
            VmReader<Infallible> r = _seg.Reader();
            r.Read(back);
            return back.AsSpan().IndexOfAnyExcept((byte)0xAB) < 0;
        }

        public void Dispose()
        {
            _seg.Dispose();
            _pool.Dispose();
        }
    }

    /// <summary>What one racing pool operation is.</summary>
    public readonly record struct PoolRace(int Op, ulong Arg, int OffsetUs)
    {
        public static readonly string[] Names = { "AllocFrame", "AllocSegment", "ReferenceCount", "Trim", "FramesInUse/ReservedChunks", "USegment.Dispose" };
        public override string ToString() => $"{Names[Op]}({Hex(Arg)}) vs Dispose {Racing.Offset(OffsetUs)}";
    }

    [Test, CancelAfter(120_000)]
    public void Pool_operations_racing_Dispose_end_in_a_result_or_ObjectDisposedException_and_leak_nothing()
    {
        var inputs = Gen.Choose(0, PoolRace.Names.Length - 1).SelectMany(op =>
            U64(1, 2, 511, 512, 513, 2 * Huge / Page, Huge, 0).SelectMany(arg =>
                Gen.Choose(-20, 30).Select(d => new PoolRace(op, arg, d))));
        PropertySuite.Check("FramePool operations racing Dispose", 1000, inputs, race =>
        {
            string call = race.ToString();
            // Unfixed, an allocation that passed the disposed check before Dispose writes the unmapped
            // metadata, and ReferenceCount after Dispose reads it: both end the process.
            if (!PropertySuite.MayRun(race.Op is 0 or 1 or 2)) return;
            var pool = new FramePool(2 * MiB);
            USegment? pre = race.Op == 5 ? pool.AllocSegment(Math.Clamp(race.Arg, 1, 512)) : null;
            Outcome<IDisposable?> op = default;
            Outcome<bool> dispose = default;
            _racer.Race(
                () => op = Run.Of<IDisposable?>(() => race.Op switch
                {
                    0 => pool.AllocFrame(),
                    1 => pool.AllocSegment(race.Arg),
                    2 => Nothing(pool.ReferenceCount(race.Arg)),
                    3 => Nothing(() => pool.Trim()),
                    4 => Nothing(pool.FramesInUse + pool.ReservedChunks),
                    _ => Nothing(pre!.Dispose),
                }),
                () => dispose = Run.Of(pool.Dispose),
                race.OffsetUs, call);
            Contract.For(call + ": the operation")
                .MayRefuse<ObjectDisposedException>(race.Op is 0 or 1 or 2 or 3, "the pool was disposed first")
                .MayRefuse<ArgumentOutOfRangeException>(race.Op == 1 && (race.Arg == 0 || race.Arg > pool.TotalFrames), "a count the pool cannot hold")
                .MayRefuse<ArgumentOutOfRangeException>(race.Op == 2 && race.Arg >= pool.Capacity, "past the pool")
                .MayRefuse(UVmError.NoMemory, race.Op == 1, "no such run is free")
                .Verify(op);
            // Dispose refuses while frames are in use (a frame the operation got first, or the segment not yet disposed).
            Contract.For(call + ": Dispose").MayRefuse<InvalidOperationException>(true, "frames still in use").Verify(dispose);
            PropertySuite.Tally($"operation {(op.Threw ? op.Error!.GetType().Name : "done")}, Dispose {(dispose.Threw ? "refused" : "done")}");
            (op.Value as IDisposable)?.Dispose();
            pre?.Dispose();
            Outcome<bool> again = Run.Of(pool.Dispose);
            if (again.Threw) throw new AssertionException($"{call}: with every handle gone, Dispose still refuses: {again} ({pool.FramesInUse} frames in use)");
            Outcome<UFrame> after = Run.Of(() => pool.AllocFrame());
            Contract.For(call + ": AllocFrame after Dispose").Refuses<ObjectDisposedException>(true, "the pool was disposed").Verify(after);
        });
    }

    private static IDisposable? Nothing<T>(T _) => null;

    private static IDisposable? Nothing(Action a)
    {
        a();
        return null;
    }
}
