using FsCheck;
using FsCheck.Fluent;
using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Reliability;
using static UVm.Tests.Properties.Extremes;

namespace UVm.Tests.Properties;

/// <summary>
/// Fallible readers and writers fed extreme guest addresses and lengths (the guest controls
/// them): creation, copies both ways, fills, skips and limits, single values of every size,
/// atomics and C strings, checked to the byte against the page table's rights; and fallible
/// accesses racing <see cref="VmSpace.Dispose"/> and <see cref="AddressSpace.Dispose"/>. A fallible
/// access must never throw (beyond the argument checks its docs give) and never crash.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class IoProperties
{
    private const ulong MiB = 1UL << 20;
    private const ulong S = RawWorld.Size;

    private FramePool _pool = null!;
    private RawWorld _world = null!;
    private SpaceWatch _watch = null!;
    private VmSpace _other = null!, _disposed = null!;
    private readonly Racer _racer = new();
    private int _cases;

    [SetUp]
    public void CreateWorld()
    {
        _pool = new FramePool(16 * MiB);
        _other = new VmSpace(new VmSpaceOptions { Size = 2 * MiB, Pool = _pool });
        _disposed = new VmSpace(new VmSpaceOptions { Size = 2 * MiB, Pool = _pool });
        _disposed.Dispose();
        _world = new RawWorld(_pool);
        _watch = new SpaceWatch(_world.Space);
    }

    [TearDown]
    public void DisposeWorld()
    {
        _world.Dispose();
        _other.Dispose();
        if (_pool.FramesInUse == 0) _pool.Dispose();
        else if (TestContext.CurrentContext.Result.Outcome.Status == NUnit.Framework.Interfaces.TestStatus.Passed)
            Assert.Fail($"the property's pool leaked {_pool.FramesInUse} frames");
    }

    [OneTimeTearDown]
    public void StopRacer() => _racer.Dispose();

    private VmSpace Space => _world.Space;

    private static readonly ulong[] WorldAddresses =
    {
        0, 8, RawWorld.RunVa, RawWorld.RunVa + 3 * Page + 4090, RawWorld.HoleVa, RawWorld.ReadOnlyVa, RawWorld.ReadOnlyVa + Page - 3,
        RawWorld.NoAccessVa, RawWorld.SegmentVa, 2 * MiB - 5, RawWorld.IoVa, RawWorld.IoVa + Page + 4093, RawWorld.TailVa, S - 8, S - 1, S,
    };

    /// <summary>How the space stands with the calling thread when the reader or writer is made.</summary>
    public enum Activation { Active, None, OtherSpace, Disposed }

    /// <summary>One step on a fallible reader and writer of the same range.</summary>
    public readonly record struct IoStep(char Kind, ulong Arg, bool Flag = false)
    {
        public override string ToString() => Kind switch
        {
            'R' => $"ReadFallible(span {Arg})",
            'r' => $"ReadFallible(writer {Arg})",
            'W' => $"WriteFallible(span {Arg})",
            'w' => $"WriteFallible(reader {Arg})",
            'Z' => $"FillZeros({Hex(Arg)})",
            'S' => $"Skip({Hex(Arg)})",
            'L' => $"Limit({Hex(Arg)})",
            'V' => $"ReadVal<{Arg} bytes>",
            'X' => $"WriteVal<{Arg} bytes>",
            'A' => $"AtomicLoad{Arg * 8}",
            'C' => $"AtomicCompareExchange{Arg * 8}({(Flag ? "matching" : "not matching")})",
            _ => $"ReadCString(buffer {Arg})",
        };
    }

    /// <summary>A case: where the reader and writer are, how they are made, and what is done with them.</summary>
    public sealed record IoCase(ulong Va, ulong Len, Activation How, bool Separately, IoStep[] Steps)
    {
        public override string ToString() =>
            $"{(Separately ? "Reader+Writer" : "ReaderWriter")}({Hex(Va)}, {Hex(Len)}) with the space {How}; then {string.Join(" ", Steps)}";
    }

    private static Gen<IoStep> Steps =>
        Gen.Elements('R', 'r', 'W', 'w', 'Z', 'S', 'L', 'V', 'X', 'A', 'C', 'N', 'R', 'W', 'V').SelectMany(k => k switch
        {
            'R' or 'r' or 'W' or 'w' or 'N' => BufferLength(3 * (int)Page + 9).Select(n => new IoStep(k, (ulong)n)),
            'Z' => U64(1, 8, Page, 2 * Page).Select(n => new IoStep(k, n)),
            'S' or 'L' => U64(1, 3, 8, Page - 1, Page, 2 * Page).Select(n => new IoStep(k, n)),
            'V' or 'X' => Gen.Elements(1UL, 2UL, 4UL, 8UL, 16UL).Select(n => new IoStep(k, n)),
            'A' => Gen.Elements(4UL, 8UL).Select(n => new IoStep(k, n)),
            _ => Gen.Zip(Gen.Elements(4UL, 8UL), Gen.Elements(true, false)).Select(t => new IoStep(k, t.Item1, t.Item2)),
        });

    private static Gen<IoCase> Cases =>
        Gen.Zip(Gen.Zip(Mixed(Gen.Elements(WorldAddresses), WorldAddresses), Mixed(Gen.Elements(1UL, 8UL, 100UL, Page, 2 * Page + 17, 6 * Page), Page, S, 1UL << 47)),
                Gen.Zip(Gen.Frequency((12, Gen.Constant(Activation.Active)), (1, Gen.Constant(Activation.None)), (1, Gen.Constant(Activation.OtherSpace)), (1, Gen.Constant(Activation.Disposed))),
                        Gen.Zip(Gen.Elements(false, true), Gen.ListOf(Steps).Select(l => l.Take(8).ToArray()))))
           .Select(t => new IoCase(t.Item1.Item1, t.Item1.Item2, t.Item2.Item1, t.Item2.Item2.Item1, t.Item2.Item2.Item2));

    [Test, CancelAfter(180_000)]
    public void Fallible_readers_and_writers_of_any_range_do_exactly_what_the_page_table_allows_and_never_throw_beyond_their_docs()
    {
        PropertySuite.Check("Fallible Reader/Writer: creation and every operation", 8000, Cases, c =>
        {
            string call = c.ToString();
            VmSpace target = c.How == Activation.Disposed ? _disposed : Space;
            switch (c.How)
            {
                case Activation.None: VmSpace.Deactivate(); break;
                case Activation.OtherSpace: _other.Activate(); break;
                default: Space.Activate(); break;
            }
            try
            {
                RunCase(c, target, call);
            }
            finally
            {
                Space.Activate();
            }
            _watch.AssertUnchanged(call);
            if (++_cases % 200 == 0) AssertContentsIntact(call);
        });
    }

    private void RunCase(IoCase c, VmSpace target, string call)
    {
        VmReader<Fallible> r;
        VmWriter<Fallible> w;
        bool rangeBad = c.Va + c.Len < c.Va || c.Va + c.Len > target.Size;
        Contract Creation(string what) => Contract.For($"{call}: {what}")
            .Refuses<ObjectDisposedException>(c.How == Activation.Disposed, "the space was disposed")
            .Refuses(UVmError.AccessDenied, c.How is Activation.None or Activation.OtherSpace, "the space is not activated on this thread")
            .Refuses(UVmError.AccessDenied, rangeBad, "va + len overflows or passes Size");
        if (c.Separately)
        {
            try { r = target.Reader(c.Va, c.Len); }
            catch (Exception e) { Creation("Reader").Verify(Outcome<bool>.Failed(e)); PropertySuite.Tally("refused at creation"); return; }
            Creation("Reader").Verify(Outcome<bool>.Returned(true));
            try { w = target.Writer(c.Va, c.Len); }
            catch (Exception e) { Creation("Writer").Verify(Outcome<bool>.Failed(e)); PropertySuite.Tally("refused at creation"); return; }
            Creation("Writer").Verify(Outcome<bool>.Returned(true));
        }
        else
        {
            try { target.ReaderWriter(c.Va, c.Len, out r, out w); }
            catch (Exception e) { Creation("ReaderWriter").Verify(Outcome<bool>.Failed(e)); PropertySuite.Tally("refused at creation"); return; }
            Creation("ReaderWriter").Verify(Outcome<bool>.Returned(true));
        }
        PropertySuite.Tally("created");
        ulong rp = c.Va, rend = c.Va + c.Len, wp = c.Va, wend = c.Va + c.Len;
        Expect.Equal(r.Remain, c.Len, call, "Remain of a new reader");
        Expect.Equal(w.Avail, c.Len, call, "Avail of a new writer");
        Expect.Equal((ulong)r.Cursor, (ulong)Space.HostBase + c.Va, call, "host address of the reader");
        foreach (IoStep s in c.Steps)
        {
            string at = $"{call}: at {s} (reader at {Hex(rp)} of {Hex(rend)}, writer at {Hex(wp)} of {Hex(wend)})";
            Step(ref r, ref w, s, at, ref rp, ref rend, ref wp, ref wend);
            PropertySuite.Tally("steps");
            Expect.Equal(r.GuestAddress(), rp, at, "reader's GuestAddress");
            Expect.Equal(w.GuestAddress(), wp, at, "writer's GuestAddress");
            Expect.Equal(r.Remain, rend - rp, at, "reader's Remain");
            Expect.Equal(w.Avail, wend - wp, at, "writer's Avail");
        }
    }

    private void Step(ref VmReader<Fallible> r, ref VmWriter<Fallible> w, IoStep s, string at, ref ulong rp, ref ulong rend, ref ulong wp, ref ulong wend)
    {
        switch (s.Kind)
        {
            case 'R':
            case 'r':
            {
                var buf = new byte[s.Arg];
                ulong want = Math.Min(rend - rp, s.Arg);
                CopyResult res;
                if (s.Kind == 'R') res = r.ReadFallible(buf);
                else
                {
                    unsafe
                    {
                        fixed (byte* p = buf)
                        {
                            VmWriter<Infallible> into = InfallibleIo.WriterOver(p, (ulong)buf.Length);
                            res = r.ReadFallible(ref into);
                            Expect.Equal(into.Avail, (ulong)buf.Length - res.Bytes, at, "the library-side writer's Avail");
                        }
                    }
                }
                CheckCopy(res, rp, want, write: false, at);
                for (ulong i = 0; i < res.Bytes; i++)
                    if (buf[i] != RawWorld.Pattern(rp + i)) throw new AssertionException($"{at}: byte {Hex(rp + i)} read as {buf[i]}, the page holds {RawWorld.Pattern(rp + i)}");
                rp += res.Bytes;
                break;
            }
            case 'W':
            case 'w':
            {
                // The pattern the pages already hold: a write changes nothing it may reach.
                var buf = new byte[s.Arg];
                for (ulong i = 0; i < s.Arg; i++) buf[i] = RawWorld.Pattern(wp + i);
                ulong want = Math.Min(wend - wp, s.Arg);
                CopyResult res;
                if (s.Kind == 'W') res = w.WriteFallible(buf);
                else
                {
                    unsafe
                    {
                        fixed (byte* p = buf)
                        {
                            VmReader<Infallible> from = InfallibleIo.ReaderOver(p, (ulong)buf.Length);
                            res = w.WriteFallible(ref from);
                            Expect.Equal(from.Remain, (ulong)buf.Length - res.Bytes, at, "the library-side reader's Remain");
                        }
                    }
                }
                CheckCopy(res, wp, want, write: true, at);
                wp += res.Bytes;
                break;
            }
            case 'Z':
            {
                ulong want = Math.Min(wend - wp, s.Arg);
                CopyResult res = w.FillZeros(s.Arg);
                CheckCopy(res, wp, want, write: true, at);
                Restore(wp, res.Bytes, at);
                wp += res.Bytes;
                break;
            }
            case 'S':
            {
                ulong n = s.Arg;
                Outcome<bool> o;
                try { r.Skip(n); o = Outcome<bool>.Returned(true); } catch (Exception e) { o = Outcome<bool>.Failed(e); }
                if (Contract.For(at + " on the reader").Refuses<ArgumentOutOfRangeException>(n > rend - rp, "fewer bytes remain").Verify(o)) rp += n;
                try { w.Skip(n); o = Outcome<bool>.Returned(true); } catch (Exception e) { o = Outcome<bool>.Failed(e); }
                if (Contract.For(at + " on the writer").Refuses<ArgumentOutOfRangeException>(n > wend - wp, "less room remains").Verify(o)) wp += n;
                break;
            }
            case 'L':
                r.Limit(s.Arg);
                w.Limit(s.Arg);
                rend = rp + Math.Min(s.Arg, rend - rp);
                wend = wp + Math.Min(s.Arg, wend - wp);
                break;
            case 'V':
            {
                int size = (int)s.Arg;
                Outcome<(bool Ok, ulong Value, PageFaultInfo? Fault)> o;
                try { o = Outcome<(bool, ulong, PageFaultInfo?)>.Returned(ReadValOfSize(ref r, size)); }
                catch (Exception e) { o = Outcome<(bool, ulong, PageFaultInfo?)>.Failed(e); }
                if (!Contract.For(at).Refuses<ArgumentOutOfRangeException>(rend - rp < (ulong)size, "fewer bytes remain than the value").Verify(o)) break;
                bool reachable = _world.Reach(rp, (ulong)size, write: false) == (ulong)size;
                CheckSingle(o.Value.Ok, o.Value.Fault, reachable, rp, (ulong)size, write: false, at);
                if (o.Value.Ok)
                {
                    Expect.Equal(o.Value.Value, PatternValue(rp, size), at, "value read");
                    rp += (ulong)size;
                }
                break;
            }
            case 'X':
            {
                int size = (int)s.Arg;
                Outcome<(bool Ok, PageFaultInfo? Fault)> o;
                try { o = Outcome<(bool, PageFaultInfo?)>.Returned(WriteValOfSize(ref w, size, PatternValue(wp, size))); }
                catch (Exception e) { o = Outcome<(bool, PageFaultInfo?)>.Failed(e); }
                if (!Contract.For(at).Refuses<ArgumentOutOfRangeException>(wend - wp < (ulong)size, "less room than the value").Verify(o)) break;
                bool reachable = _world.Reach(wp, (ulong)size, write: true) == (ulong)size;
                CheckSingle(o.Value.Ok, o.Value.Fault, reachable, wp, (ulong)size, write: true, at);
                if (o.Value.Ok) wp += (ulong)size;
                break;
            }
            case 'A':
            {
                int size = (int)s.Arg;
                Outcome<(bool Ok, ulong Value, PageFaultInfo? Fault)> o;
                try
                {
                    if (size == 4) { IoResult<uint> x = r.AtomicLoad32(); o = Outcome<(bool, ulong, PageFaultInfo?)>.Returned((x.IsOk, x.Value, x.Fault)); }
                    else { IoResult<ulong> x = r.AtomicLoad64(); o = Outcome<(bool, ulong, PageFaultInfo?)>.Returned((x.IsOk, x.Value, x.Fault)); }
                }
                catch (Exception e) { o = Outcome<(bool, ulong, PageFaultInfo?)>.Failed(e); }
                if (!Contract.For(at).Refuses<ArgumentException>(rp % (ulong)size != 0, "cursor not aligned").Refuses<ArgumentException>(rend - rp < (ulong)size, "too few bytes").Verify(o)) break;
                CheckSingle(o.Value.Ok, o.Value.Fault, _world.Reach(rp, (ulong)size, false) == (ulong)size, rp, (ulong)size, write: false, at);
                if (o.Value.Ok) Expect.Equal(o.Value.Value, PatternValue(rp, size), at, "value loaded");
                break;
            }
            case 'C':
            {
                int size = (int)s.Arg;
                ulong now = PatternValue(wp, size);
                ulong expected = s.Flag ? now : now ^ 1;
                Outcome<(bool Ok, ulong Seen, PageFaultInfo? Fault)> o;
                try
                {
                    if (size == 4) { IoResult<uint> x = w.AtomicCompareExchange((uint)expected, (uint)now); o = Outcome<(bool, ulong, PageFaultInfo?)>.Returned((x.IsOk, x.Value, x.Fault)); }
                    else { IoResult<ulong> x = w.AtomicCompareExchange(expected, now); o = Outcome<(bool, ulong, PageFaultInfo?)>.Returned((x.IsOk, x.Value, x.Fault)); }
                }
                catch (Exception e) { o = Outcome<(bool, ulong, PageFaultInfo?)>.Failed(e); }
                if (!Contract.For(at).Refuses<ArgumentException>(wp % (ulong)size != 0, "cursor not aligned").Refuses<ArgumentException>(wend - wp < (ulong)size, "too little room").Verify(o)) break;
                // It counts as a write even when the values differ.
                CheckSingle(o.Value.Ok, o.Value.Fault, _world.Reach(wp, (ulong)size, true) == (ulong)size, wp, (ulong)size, write: true, at);
                if (o.Value.Ok) Expect.Equal(o.Value.Seen, now, at, "value seen before the exchange");
                break;
            }
            default:
            {
                var buf = new byte[s.Arg];
                IoResult<int> res = r.ReadCString(buf);
                ulong limit = Math.Min(s.Arg, rend - rp);
                (UVmError? error, ulong length) = (UVmError.InvalidArgs, 0);
                for (ulong i = 0; i < limit; i++)
                {
                    if (!_world.Allows(rp + i, write: false)) { (error, length) = (UVmError.PageFault, i); break; }
                    if (RawWorld.Pattern(rp + i) == 0) { (error, length) = (null, i); break; }
                }
                Expect.Equal(res.Error, error, at, "outcome (null: a string found)");
                if (error is null)
                {
                    Expect.Equal((ulong)res.Value, length, at, "string length");
                    for (ulong i = 0; i < length; i++)
                        if (buf[i] != RawWorld.Pattern(rp + i)) throw new AssertionException($"{at}: string byte {i} is {buf[i]}, the page holds {RawWorld.Pattern(rp + i)}");
                    Expect.Equal(buf[length], (byte)0, at, "the NUL after the string");
                    rp += length + 1;
                }
                else if (error == UVmError.PageFault)
                {
                    Expect.Equal(res.Fault?.Address, rp + length, at, "fault address of the string");
                }
                break;
            }
        }
    }

    /// <summary>A copy of <paramref name="want"/> bytes at <paramref name="va"/>: exactly the reachable prefix, and a fault exactly where it stopped.</summary>
    private void CheckCopy(CopyResult res, ulong va, ulong want, bool write, string at)
    {
        ulong reach = _world.Reach(va, want, write);
        Expect.Equal(res.Bytes, reach, at, "bytes copied (up to the first page that refuses)");
        if (reach == want)
        {
            Expect.That(res.IsOk && res.Fault is null, at, $"a copy that did everything reports {res}");
            return;
        }
        Expect.Equal(res.Error, UVmError.PageFault, at, "error of a copy stopped by a fault");
        CheckFault(res.Fault, va + reach, write, at);
    }

    /// <summary>A single access of <paramref name="size"/> bytes: all or nothing, the fault on the first page that refuses.</summary>
    private void CheckSingle(bool ok, PageFaultInfo? fault, bool reachable, ulong va, ulong size, bool write, string at)
    {
        Expect.Equal(ok, reachable, at, "succeeded (every byte of the value reachable)");
        if (ok) return;
        ulong first = va + _world.Reach(va, size, write);
        Expect.That(fault is { } f && f.Address >= va && f.Address < va + size && (f.Address & ~(Page - 1)) == (first & ~(Page - 1)), at,
            $"fault {fault} is not on the first page that refuses, {Hex(first & ~(Page - 1))}");
        CheckFault(fault, fault!.Value.Address, write, at);
    }

    private void CheckFault(PageFaultInfo? fault, ulong address, bool write, string at)
    {
        if (fault is not { } f) throw new AssertionException($"{at}: a fault without its PageFaultInfo");
        Expect.Equal(f.Address, address, at, "fault address");
        Expect.Equal(f.Access, write ? PageFaultAccess.Write : PageFaultAccess.Read, at, "fault access");
        Expect.Equal(f.Kind, _world.RightsAt(address) is null ? PageFaultKind.NotPresent : PageFaultKind.Protection, at, "fault kind");
    }

    /// <summary>Writes the pattern back over <c>[va, va + len)</c> after a fill.</summary>
    private void Restore(ulong va, ulong len, string at)
    {
        if (len == 0) return;
        var zeros = new byte[len];
        Expect.That(Harness.Read(Space, va, zeros).IsOk && zeros.AsSpan().IndexOfAnyExcept((byte)0) < 0, at, "FillZeros left non-zero bytes");
        var back = new byte[len];
        for (ulong i = 0; i < len; i++) back[i] = RawWorld.Pattern(va + i);
        Expect.That(Harness.Write(Space, va, back).IsOk, at, "could not write the pattern back");
    }

    private void AssertContentsIntact(string call)
    {
        foreach ((ulong va, PageFlags f) in _world.Rights)
        {
            if ((f & PageFlags.R) == 0) continue;
            var page = new byte[Page];
            Expect.That(Harness.Read(Space, va, page).IsOk, call, $"page {Hex(va)} no longer reads");
            for (ulong i = 0; i < Page; i++)
                if (page[i] != RawWorld.Pattern(va + i)) throw new AssertionException($"{call}: byte {Hex(va + i)} is {page[i]}, not {RawWorld.Pattern(va + i)} (changed by a case)");
        }
    }

    private static ulong PatternValue(ulong va, int size)
    {
        ulong v = 0;
        for (int i = 0; i < Math.Min(size, 8); i++) v |= (ulong)RawWorld.Pattern(va + (ulong)i) << (8 * i);
        return v;
    }

    private static (bool, ulong, PageFaultInfo?) ReadValOfSize(ref VmReader<Fallible> r, int size)
    {
        switch (size)
        {
            case 1: { IoResult<byte> x = r.ReadVal<byte>(); return (x.IsOk, x.Value, x.Fault); }
            case 2: { IoResult<ushort> x = r.ReadVal<ushort>(); return (x.IsOk, x.Value, x.Fault); }
            case 4: { IoResult<uint> x = r.ReadVal<uint>(); return (x.IsOk, x.Value, x.Fault); }
            case 8: { IoResult<ulong> x = r.ReadVal<ulong>(); return (x.IsOk, x.Value, x.Fault); }
            default: { IoResult<UInt128> x = r.ReadVal<UInt128>(); return (x.IsOk, (ulong)x.Value, x.Fault); }
        }
    }

    private (bool, PageFaultInfo?) WriteValOfSize(ref VmWriter<Fallible> w, int size, ulong value)
    {
        switch (size)
        {
            case 1: { IoResult<byte> x = w.WriteVal((byte)value); return (x.IsOk, x.Fault); }
            case 2: { IoResult<ushort> x = w.WriteVal((ushort)value); return (x.IsOk, x.Fault); }
            case 4: { IoResult<uint> x = w.WriteVal((uint)value); return (x.IsOk, x.Fault); }
            case 8: { IoResult<ulong> x = w.WriteVal(value); return (x.IsOk, x.Fault); }
            default:
            {
                // 16 bytes: the pattern of all of them, so a write that succeeds changes nothing.
                ulong va = (ulong)w.GuestAddress();
                var v = new UInt128(PatternValue(va + 8, 8), PatternValue(va, 8));
                IoResult<UInt128> x = w.WriteVal(v);
                return (x.IsOk, x.Fault);
            }
        }
    }

    // ---- fallible accesses racing Dispose -------------------------------------------------------------------------------

    /// <summary>A fallible access, made before the race, raced against Dispose of its space or address space.</summary>
    public readonly record struct AccessRace(char Op, ulong Va, ulong Len, bool Areas, int AfterFaults, int OffsetUs)
    {
        public override string ToString() =>
            $"{new IoStep(Op, Op is 'V' or 'X' or 'A' or 'C' ? 8 : Len)} on [{Hex(Va)}, +{Hex(Len)}) of {(Areas ? "an AddressSpace (lazy area: demand-zero faults)" : "a VmSpace")}"
            + $" vs Dispose {(AfterFaults >= 0 ? $"once {AfterFaults} demand-zero faults were resolved, then " : "")}{Racing.Offset(OffsetUs)}";
    }

    [Test, CancelAfter(180_000)]
    public void Fallible_accesses_racing_Dispose_return_a_result_never_an_exception_and_leak_nothing()
    {
        const ulong Small = 4 * MiB, Lazy = 1 * MiB, Populated = 2 * MiB;
        var inputs = Gen.Elements('R', 'W', 'Z', 'V', 'X', 'A', 'C', 'N').SelectMany(op =>
            Gen.Zip(Mixed(Gen.Elements(Lazy, Lazy + 8, Lazy + 40 * Page, Populated, Populated - Page, 0UL), Lazy, Populated, Small),
                    Mixed(Gen.Elements(8UL, Page, 16 * Page, 64 * Page), Page, 64 * Page)).SelectMany(a =>
                Gen.Elements(true, true, false).SelectMany(areas =>
                    (areas ? Gen.Frequency((1, Gen.Constant(-1)), (2, Gen.Choose(0, 3))) : Gen.Constant(-1)).SelectMany(after =>
                        (after >= 0 ? Gen.Choose(0, 40) : Gen.Choose(-30, 300)).Select(offset => new AccessRace(op, a.Item1, a.Item2, areas, after, offset))))));
        PoolState baseline = PoolState.Of(_pool);
        PropertySuite.Check("Fallible accesses racing Dispose", 1500, inputs, race =>
        {
            string call = race.ToString();
            AddressSpace? areas = null;
            VmSpace space;
            if (race.Areas)
            {
                areas = new AddressSpace(new VmSpaceOptions { Size = Small, Pool = _pool });
                areas.Map(64 * Page, new AreaBackend.Alloc(false), new VmMapOptions { Addr = Lazy, Flags = PageFlags.RW });
                areas.Map(4 * Page, new AreaBackend.Alloc(true), new VmMapOptions { Addr = Populated, Flags = PageFlags.RW });
                space = areas.Space;
            }
            else
            {
                space = new VmSpace(new VmSpaceOptions { Size = Small, Pool = _pool });
                for (ulong i = 0; i < 4; i++) Harness.MapFilled(space, Populated + i * Page, 0x5A);
            }
            Outcome<string> access = default;
            Outcome<bool> dispose = default;
            _racer.Race(
                () => access = Run.Of(() => RaceAccess(space, race)),
                () => dispose = Run.Of(() => { if (areas != null) areas.Dispose(); else space.Dispose(); }),
                race.OffsetUs, call,
                race.AfterFaults >= 0 && areas != null ? () => areas.Stats.DemandZeroFaults >= race.AfterFaults : null);
            Contract.MustSucceed(call + ": Dispose", dispose);
            Contract.For(call + ": making the reader or writer")
                .MayRefuse<ObjectDisposedException>(true, "the space was disposed first")
                .MayRefuse(UVmError.AccessDenied, true, "the range is not inside the space")
                .Verify(access);
            if (access.Value is { Length: > 0 } wrong) throw new AssertionException($"{call}: {wrong}");
            PropertySuite.Tally(access.Threw ? "creation refused: " + access.Error!.GetType().Name : s_lastAccess);
            baseline.AssertSame(_pool, call + ": after Dispose");
        });
    }

    /// <summary>Makes the reader or writer (its own refusals are allowed), then does the access, which must not throw; returns what is wrong with its result.</summary>
    private static string RaceAccess(VmSpace space, AccessRace race)
    {
        space.Activate();
        try
        {
            space.ReaderWriter(race.Va, race.Len, out VmReader<Fallible> r, out VmWriter<Fallible> w);
            try
            {
                return DoAccess(ref r, ref w, race);
            }
            catch (Exception e)
            {
                return $"the access itself threw {e.GetType().Name}: {e.Message}";
            }
        }
        finally
        {
            VmSpace.Deactivate();
        }
    }

    private static volatile string s_lastAccess = "";

    private static string DoAccess(ref VmReader<Fallible> r, ref VmWriter<Fallible> w, AccessRace race)
    {
        string Check(bool ok, UVmError? error, PageFaultInfo? fault, ulong bytes, ulong max)
        {
            s_lastAccess = ok ? "access done" : bytes == 0 ? "access refused at once" : "access stopped part-way";
            return bytes > max ? $"{bytes} bytes done of {max}"
            : ok ? (bytes == max ? "" : $"succeeded after {bytes} of {max} bytes")
            : error == UVmError.PageFault && fault is not null ? ""
            : $"failed with {error}, fault {fault}";
        }
        s_lastAccess = "not tried (arguments)";
        ulong len = race.Len;
        switch (race.Op)
        {
            case 'R':
            {
                var buf = new byte[Math.Min(len, 64 * Page)];
                CopyResult x = r.ReadFallible(buf);
                return Check(x.IsOk, x.Error, x.Fault, x.Bytes, (ulong)buf.Length);
            }
            case 'W':
            {
                var buf = new byte[Math.Min(len, 64 * Page)];
                CopyResult x = w.WriteFallible(buf);
                return Check(x.IsOk, x.Error, x.Fault, x.Bytes, (ulong)buf.Length);
            }
            case 'Z':
            {
                CopyResult x = w.FillZeros(Math.Min(len, 64 * Page));
                return Check(x.IsOk, x.Error, x.Fault, x.Bytes, Math.Min(len, 64 * Page));
            }
            case 'V':
            {
                if (r.Remain < 8) return "";
                IoResult<ulong> x = r.ReadVal<ulong>();
                return Check(x.IsOk, x.Error, x.Fault, x.IsOk ? 8UL : 0, 8);
            }
            case 'X':
            {
                if (w.Avail < 8) return "";
                IoResult<ulong> x = w.WriteVal(7UL);
                return Check(x.IsOk, x.Error, x.Fault, x.IsOk ? 8UL : 0, 8);
            }
            case 'A':
            {
                if (r.Remain < 8 || race.Va % 8 != 0) return "";
                IoResult<ulong> x = r.AtomicLoad64();
                return Check(x.IsOk, x.Error, x.Fault, x.IsOk ? 8UL : 0, 8);
            }
            case 'C':
            {
                if (w.Avail < 8 || race.Va % 8 != 0) return "";
                IoResult<ulong> x = w.AtomicCompareExchange(0UL, 9UL);
                return Check(x.IsOk, x.Error, x.Fault, x.IsOk ? 8UL : 0, 8);
            }
            default:
            {
                var buf = new byte[Math.Min(len, 64 * Page)];
                IoResult<int> x = r.ReadCString(buf);
                if (x.Error == UVmError.InvalidArgs) return "";
                return Check(x.IsOk, x.Error, x.Fault, x.IsOk ? 1UL : 0, 1);
            }
        }
    }
}
