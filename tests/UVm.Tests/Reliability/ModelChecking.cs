using System.Diagnostics;
using System.Text;
using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;
using UVm.Io;
using UVm.Spaces;
using static UVm.Tests.Reliability.Harness;

namespace UVm.Tests.Reliability;

/// <summary>
/// Model-based random testing. Seeded sequences of map / unmap / protect / write / read / fork /
/// dispose on <see cref="AddressSpace"/>s (and map / unmap / protect through raw cursors outside
/// every area) run against a plain reference model: per space, guest page → (contents, rights).
/// Contents are read back through fallible readers, rights are probed through faults (a write
/// to a page without W and any access to an unmapped page must fail with
/// <see cref="UVmError.PageFault"/> exactly at that page), and at checkpoints the host must mirror
/// every page table and every frame's reference count must equal its mappings plus handles.
/// </summary>
/// <remarks>Seed: <c>UVM_SEED</c>, else fresh and printed. <c>UVM_SOAK=1</c> runs 20× longer.</remarks>
[TestFixture, NonParallelizable]
public sealed class ModelChecking
{
    private const ulong SpaceSize = 32 * MiB;
    private const ulong AreaStart = Page, AreaEnd = 16 * MiB;                 // areas live here
    private const ulong DirectStart = 24 * MiB, DirectEnd = DirectStart + 2 * MiB; // raw cursor mappings live here
    private const int SegmentFrames = 32;
    private const int MaxSpaces = 4;

    private static readonly PageFlags[] AreaRights = { PageFlags.None, PageFlags.R, PageFlags.RW, PageFlags.RX, PageFlags.RWX };
    private static readonly PageFlags[] DirectRights = { PageFlags.None, PageFlags.R, PageFlags.RW };

    private enum Kind { Private, Linear, Direct }

    /// <summary>A frame as the model sees it: its bytes, shared by reference where the frame is shared.</summary>
    private sealed class Cell
    {
        public readonly byte[] Data = new byte[Page];
        public ulong Paddr; // known for linear and direct frames; private frames move under copy-on-write
        public Cell Clone()
        {
            var c = new Cell();
            Data.CopyTo(c.Data, 0);
            return c;
        }
    }

    private sealed record ModelPage(Cell Cell, PageFlags Rights, Kind Kind);

    private sealed class ModelSpace
    {
        public required AddressSpace Areas;
        public required int Id;
        public readonly SortedDictionary<ulong, ModelPage> Pages = new();
        public VmSpace Space => Areas.Space;
    }

    /// <summary>A divergence between UVm and the model.</summary>
    private sealed class Divergence(string message) : Exception(message);

    private sealed class Run
    {
        private readonly Random _rng;
        private readonly FramePool _pool;
        private readonly USegment _segment;
        private readonly Cell[] _segmentCells = new Cell[SegmentFrames];
        private readonly List<ModelSpace> _spaces = new();
        private readonly Queue<string> _trace = new();
        private int _nextId;

        public long Ops, Reads, Writes, FaultsExpected, Forks, Checks, FaultsTaken;

        public Run(int seed)
        {
            _rng = new Random(seed);
            _pool = new FramePool(256 * MiB);
            _segment = _pool.AllocSegment(SegmentFrames);
            for (int i = 0; i < SegmentFrames; i++)
                _segmentCells[i] = new Cell { Paddr = _segment.Paddr + (ulong)i * Page };
            NewSpace();
        }

        public string Trace => string.Join("\n", _trace);

        private void Log(string op)
        {
            _trace.Enqueue($"#{Ops} {op}");
            if (_trace.Count > 40) _trace.Dequeue();
        }

        private ModelSpace NewSpace()
        {
            var m = new ModelSpace { Areas = new AddressSpace(new VmSpaceOptions { Size = SpaceSize, Pool = _pool }), Id = _nextId++ };
            m.Areas.FaultAroundPages = 1 << _rng.Next(0, 5);
            _spaces.Add(m);
            return m;
        }

        private static void Expect(bool ok, string what)
        {
            if (!ok) throw new Divergence(what);
        }

        private ulong RandomPage(ulong start, ulong end) => start + (ulong)_rng.NextInt64(0, (long)((end - start) / Page)) * Page;

        /// <summary>A page address: mostly near existing pages so accesses hit something.</summary>
        private ulong RandomVa(ModelSpace m)
        {
            if (m.Pages.Count > 0 && _rng.Next(4) != 0)
            {
                ulong near = m.Pages.Keys.ElementAt(_rng.Next(m.Pages.Count));
                long shift = _rng.Next(-2, 3) * (long)Page;
                ulong va = (ulong)Math.Clamp((long)near + shift, (long)Page, (long)(SpaceSize - Page));
                return va;
            }
            return _rng.Next(3) == 0 ? RandomPage(DirectStart, DirectEnd) : RandomPage(AreaStart, AreaEnd);
        }

        public void Step()
        {
            Ops++;
            ModelSpace m = _spaces[_rng.Next(_spaces.Count)];
            int dice = _rng.Next(100);
            if (dice < 12) MapFixed(m);
            else if (dice < 17) MapAnywhere(m);
            else if (dice < 24) UnmapAreas(m);
            else if (dice < 32) ProtectAreas(m);
            else if (dice < 50) WriteBytes(m);
            else if (dice < 66) ReadBytes(m);
            else if (dice < 72) Values(m);
            else if (dice < 78) Probe(m);
            else if (dice < 83) DirectMap(m);
            else if (dice < 86) DirectUnmap(m);
            else if (dice < 89) DirectProtect(m);
            else if (dice < 92) FillZeros(m);
            else if (dice < 95) Fork(m);
            else if (dice < 97) DisposeSpace(m);
            else CheckMappings(m);
        }

        // ---- areas ------------------------------------------------------------------------------

        private (AreaBackend Backend, Func<int, ModelPage> Page, string Name) RandomBackend(ulong pages, PageFlags rights)
        {
            switch (_rng.Next(3))
            {
                case 0:
                    return (new AreaBackend.Alloc(false), _ => new ModelPage(new Cell(), rights, Kind.Private), "lazy");
                case 1:
                    return (new AreaBackend.Alloc(true), _ => new ModelPage(new Cell(), rights, Kind.Private), "populated");
                default:
                    int first = _rng.Next(0, SegmentFrames - (int)pages + 1);
                    return (new AreaBackend.LinearFrames(_segment, (ulong)first * Page),
                        i => new ModelPage(_segmentCells[first + i], rights, Kind.Linear), $"linear@{first}");
            }
        }

        private void MapFixed(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 17);
            ulong va = RandomPage(AreaStart, AreaEnd - pages * Page);
            PageFlags rights = AreaRights[_rng.Next(AreaRights.Length)];
            bool overwrite = _rng.Next(2) == 0;
            var (backend, page, name) = RandomBackend(pages, rights);
            Log($"space {m.Id}: Map fixed 0x{va:x} +{pages}p {name} {rights} overwrite={overwrite}");
            bool overlaps = m.Pages.Keys.Any(p => p >= va && p < va + pages * Page);
            if (overlaps && !overwrite)
            {
                var e = Assert.Throws<UVmException>(() => m.Areas.Map(pages * Page, backend, new VmMapOptions { Addr = va, Flags = rights }))!;
                Expect(e.Error == UVmError.MapAlreadyMappedVaddr, $"map over an area without overwrite failed with {e.Error}");
                return;
            }
            ulong got = m.Areas.Map(pages * Page, backend, new VmMapOptions { Addr = va, Flags = rights, CanOverwrite = overwrite });
            Expect(got == va, $"fixed map returned 0x{got:x}, asked 0x{va:x}");
            RemoveArea(m, va, pages);
            for (int i = 0; i < (int)pages; i++) m.Pages[va + (ulong)i * Page] = page(i);
        }

        private void MapAnywhere(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 9);
            ulong align = Page << _rng.Next(0, 5);
            ulong expected = Math.Max(align, Page);
            while (true)
            {
                ulong top = 0;
                bool busy = false;
                foreach (ulong p in m.Pages.Keys)
                {
                    if (p >= expected && p < expected + pages * Page) { busy = true; top = p; }
                }
                if (!busy) break;
                expected = (top + Page + align - 1) & ~(align - 1);
            }
            if (expected + pages * Page > AreaEnd) return; // the model keeps areas out of the raw region
            PageFlags rights = AreaRights[_rng.Next(AreaRights.Length)];
            var (backend, page, name) = RandomBackend(pages, rights);
            Log($"space {m.Id}: Map anywhere +{pages}p align 0x{align:x} {name} {rights} (expect 0x{expected:x})");
            ulong got = m.Areas.Map(pages * Page, backend, new VmMapOptions { Align = align, Flags = rights });
            Expect(got == expected, $"map without address returned 0x{got:x}; the lowest free range aligned to 0x{align:x} is 0x{expected:x}");
            for (int i = 0; i < (int)pages; i++) m.Pages[got + (ulong)i * Page] = page(i);
        }

        private static void RemoveArea(ModelSpace m, ulong va, ulong pages)
        {
            for (ulong i = 0; i < pages; i++) m.Pages.Remove(va + i * Page);
        }

        private void UnmapAreas(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 33);
            ulong va = RandomPage(AreaStart, AreaEnd - pages * Page);
            Log($"space {m.Id}: Unmap 0x{va:x} +{pages}p");
            m.Areas.Unmap(VaddrRange.FromLength(va, pages * Page));
            RemoveArea(m, va, pages);
        }

        private void ProtectAreas(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 17);
            ulong va = RandomPage(AreaStart, AreaEnd - pages * Page);
            PageFlags rights = AreaRights[_rng.Next(AreaRights.Length)];
            Log($"space {m.Id}: Protect 0x{va:x} +{pages}p {rights}");
            m.Areas.Protect(VaddrRange.FromLength(va, pages * Page), rights);
            for (ulong i = 0; i < pages; i++)
            {
                ulong p = va + i * Page;
                if (m.Pages.TryGetValue(p, out ModelPage? mp)) m.Pages[p] = mp with { Rights = rights };
            }
        }

        // ---- raw cursors outside the areas ------------------------------------------------------------

        private void DirectMap(ModelSpace m)
        {
            int pages = _rng.Next(1, 5);
            ulong va = RandomPage(DirectStart, DirectEnd - (ulong)pages * Page);
            PageFlags rights = DirectRights[_rng.Next(DirectRights.Length)];
            Log($"space {m.Id}: raw Map 0x{va:x} +{pages}p {rights}");
            var cells = new Cell[pages];
            using (CursorMut c = m.Space.CursorMut(VaddrRange.FromLength(va, (ulong)pages * Page)))
            {
                for (int i = 0; i < pages; i++)
                {
                    using UFrame f = _pool.AllocFrame();
                    cells[i] = new Cell { Paddr = f.Paddr };
                    _rng.NextBytes(cells[i].Data);
                    VmWriter<Infallible> w = f.Writer();
                    w.Write(cells[i].Data);
                    c.Map(f, PageProperty.New(rights));
                }
            }
            for (int i = 0; i < pages; i++) m.Pages[va + (ulong)i * Page] = new ModelPage(cells[i], rights, Kind.Direct);
        }

        private void DirectUnmap(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 9);
            ulong va = RandomPage(DirectStart, DirectEnd - pages * Page);
            Log($"space {m.Id}: raw Unmap 0x{va:x} +{pages}p");
            ulong unmapped;
            using (CursorMut c = m.Space.CursorMut(VaddrRange.FromLength(va, pages * Page))) unmapped = c.Unmap(pages * Page);
            ulong expected = 0;
            for (ulong i = 0; i < pages; i++)
                if (m.Pages.Remove(va + i * Page)) expected++;
            Expect(unmapped == expected, $"raw Unmap reported {unmapped} frames, the model had {expected}");
        }

        private void DirectProtect(ModelSpace m)
        {
            ulong pages = (ulong)_rng.Next(1, 9);
            ulong va = RandomPage(DirectStart, DirectEnd - pages * Page);
            PageFlags rights = DirectRights[_rng.Next(DirectRights.Length)];
            bool dispatchNow = _rng.Next(2) == 0;
            Log($"space {m.Id}: raw ProtectNext 0x{va:x} +{pages}p {rights} dispatch={(dispatchNow ? "explicit" : "on dispose")}");
            using (CursorMut c = m.Space.CursorMut(VaddrRange.FromLength(va, pages * Page)))
            {
                while (c.VirtAddr < va + pages * Page &&
                       c.ProtectNext(va + pages * Page - c.VirtAddr, (ref PageFlags f, ref CachePolicy _) => f = (f & ~PageFlags.RWX) | rights) is not null)
                {
                }
                if (dispatchNow) c.Flusher.DispatchTlbFlush();
            }
            for (ulong i = 0; i < pages; i++)
            {
                ulong p = va + i * Page;
                if (m.Pages.TryGetValue(p, out ModelPage? mp)) m.Pages[p] = mp with { Rights = rights };
            }
        }

        // ---- data through fallible readers and writers ------------------------------------------------

        /// <summary>How many bytes from <paramref name="va"/> an access needing <paramref name="need"/> may touch before it must fault.</summary>
        private static ulong Allowed(ModelSpace m, ulong va, ulong len, PageFlags need)
        {
            ulong done = 0;
            while (done < len)
            {
                ulong page = (va + done) & ~(Page - 1);
                if (!m.Pages.TryGetValue(page, out ModelPage? mp) || (mp.Rights & need) == 0) return done;
                done = Math.Min(len, page + Page - va);
            }
            return len;
        }

        private void ExpectCopy(CopyResult r, ulong va, ulong allowed, ulong len, string what)
        {
            Expect(r.Bytes == allowed, $"{what} at 0x{va:x} +{len}: copied {r.Bytes} bytes, the model allows exactly {allowed}");
            if (allowed == len)
            {
                Expect(r.IsOk, $"{what} at 0x{va:x} +{len}: failed with {r.Error} ({r.Fault}) though the model allows it");
                return;
            }
            FaultsExpected++;
            Expect(r.Error == UVmError.PageFault, $"{what}: error {r.Error}, expected PageFault");
            Expect(r.Fault is { } f && f.Address == va + allowed, $"{what}: fault reported at {r.Fault}, expected address 0x{va + allowed:x}");
        }

        private (ulong Va, int Len) RandomSpan(ModelSpace m)
        {
            ulong va = RandomVa(m) + (ulong)_rng.Next(0, (int)Page);
            int len = _rng.Next(4) == 0 ? _rng.Next(1, 3 * (int)Page) : _rng.Next(1, 256);
            if (va + (ulong)len > SpaceSize) len = (int)(SpaceSize - va);
            return (va, len);
        }

        private void WriteBytes(ModelSpace m)
        {
            (ulong va, int len) = RandomSpan(m);
            var data = new byte[len];
            _rng.NextBytes(data);
            Log($"space {m.Id}: write 0x{va:x} +{len}");
            m.Space.Activate();
            CopyResult r = Write(m.Space, va, data);
            Writes++;
            ulong allowed = Allowed(m, va, (ulong)len, PageFlags.W);
            ExpectCopy(r, va, allowed, (ulong)len, "write");
            Apply(m, va, data.AsSpan(0, (int)Math.Min(allowed, r.Bytes)));
        }

        private static void Apply(ModelSpace m, ulong va, ReadOnlySpan<byte> bytes)
        {
            for (int i = 0; i < bytes.Length;)
            {
                ulong a = va + (ulong)i;
                ulong page = a & ~(Page - 1);
                int off = (int)(a - page);
                int n = Math.Min(bytes.Length - i, (int)Page - off);
                bytes.Slice(i, n).CopyTo(m.Pages[page].Cell.Data.AsSpan(off));
                i += n;
            }
        }

        private static byte[] Expected(ModelSpace m, ulong va, ulong len)
        {
            var bytes = new byte[len];
            for (ulong i = 0; i < len;)
            {
                ulong a = va + i;
                ulong page = a & ~(Page - 1);
                int off = (int)(a - page);
                int n = (int)Math.Min(len - i, Page - (ulong)off);
                m.Pages[page].Cell.Data.AsSpan(off, n).CopyTo(bytes.AsSpan((int)i));
                i += (ulong)n;
            }
            return bytes;
        }

        private void ReadBytes(ModelSpace m)
        {
            (ulong va, int len) = RandomSpan(m);
            Log($"space {m.Id}: read 0x{va:x} +{len}");
            ReadAndCompare(m, va, (ulong)len, "read");
        }

        private void ReadAndCompare(ModelSpace m, ulong va, ulong len, string what)
        {
            var buf = new byte[len];
            m.Space.Activate();
            CopyResult r = Read(m.Space, va, buf);
            Reads++;
            ulong allowed = Allowed(m, va, len, PageFlags.R);
            ExpectCopy(r, va, allowed, len, what);
            byte[] expected = Expected(m, va, allowed);
            if (!buf.AsSpan(0, (int)allowed).SequenceEqual(expected))
            {
                int at = 0;
                while (buf[at] == expected[at]) at++;
                throw new Divergence($"{what} at 0x{va:x} +{len}: byte at 0x{va + (ulong)at:x} is 0x{buf[at]:x2}, the model says 0x{expected[at]:x2}");
            }
        }

        private void Values(ModelSpace m)
        {
            ulong va = RandomVa(m) + (ulong)_rng.Next(0, (int)Page / 8) * 8;
            m.Space.Activate();
            int which = _rng.Next(3);
            if (which == 0)
            {
                Log($"space {m.Id}: ReadVal<ulong> 0x{va:x}");
                VmReader<Fallible> r = m.Space.Reader(va, 8);
                IoResult<ulong> v = r.ReadVal<ulong>();
                bool allowed = Allowed(m, va, 8, PageFlags.R) == 8;
                Expect(v.IsOk == allowed, $"ReadVal at 0x{va:x}: ok={v.IsOk}, the model says {allowed}");
                if (allowed) Expect(v.Value == BitConverter.ToUInt64(Expected(m, va, 8)), $"ReadVal at 0x{va:x} read 0x{v.Value:x}");
                else FaultsExpected++;
            }
            else if (which == 1)
            {
                ulong value = (ulong)_rng.NextInt64();
                Log($"space {m.Id}: WriteVal<ulong> 0x{va:x} = 0x{value:x}");
                VmWriter<Fallible> w = m.Space.Writer(va, 8);
                IoResult<ulong> v = w.WriteVal(value);
                bool allowed = Allowed(m, va, 8, PageFlags.W) == 8;
                Expect(v.IsOk == allowed, $"WriteVal at 0x{va:x}: ok={v.IsOk}, the model says {allowed}");
                if (allowed) Apply(m, va, BitConverter.GetBytes(value));
                else FaultsExpected++;
            }
            else
            {
                bool readable = Allowed(m, va, 8, PageFlags.R) == 8;
                ulong current = readable ? BitConverter.ToUInt64(Expected(m, va, 8)) : 0;
                bool guessRight = _rng.Next(3) != 0;
                ulong expected = guessRight ? current : current ^ 1;
                ulong desired = (ulong)_rng.NextInt64();
                Log($"space {m.Id}: CAS 0x{va:x} 0x{expected:x} -> 0x{desired:x}");
                VmWriter<Fallible> w = m.Space.Writer(va, 8);
                IoResult<ulong> v = w.AtomicCompareExchange(expected, desired);
                bool allowed = Allowed(m, va, 8, PageFlags.W) == 8;
                Expect(v.IsOk == allowed, $"CAS at 0x{va:x}: ok={v.IsOk}, the model says {allowed}");
                if (!allowed)
                {
                    FaultsExpected++;
                    return;
                }
                Expect(v.Value == current, $"CAS at 0x{va:x} observed 0x{v.Value:x}, the model holds 0x{current:x}");
                if (guessRight) Apply(m, va, BitConverter.GetBytes(desired));
            }
        }

        private void FillZeros(ModelSpace m)
        {
            (ulong va, int len) = RandomSpan(m);
            Log($"space {m.Id}: FillZeros 0x{va:x} +{len}");
            m.Space.Activate();
            VmWriter<Fallible> w = m.Space.Writer(va, (ulong)len);
            CopyResult r = w.FillZeros((ulong)len);
            Writes++;
            ulong allowed = Allowed(m, va, (ulong)len, PageFlags.W);
            ExpectCopy(r, va, allowed, (ulong)len, "FillZeros");
            Apply(m, va, new byte[Math.Min(allowed, r.Bytes)]);
        }

        /// <summary>Rights probed through faults: one byte read, one byte written back unchanged.</summary>
        private void Probe(ModelSpace m)
        {
            ulong va = RandomVa(m) + (ulong)_rng.Next(0, (int)Page);
            Log($"space {m.Id}: probe 0x{va:x}");
            m.Space.Activate();
            var one = new byte[1];
            CopyResult r = Read(m.Space, va, one);
            Reads++;
            ExpectCopy(r, va, Allowed(m, va, 1, PageFlags.R), 1, "probe read");
            bool writable = Allowed(m, va, 1, PageFlags.W) == 1;
            byte value = m.Pages.TryGetValue(va & ~(Page - 1), out ModelPage? mp) ? mp.Cell.Data[va & (Page - 1)] : (byte)0;
            CopyResult w = Write(m.Space, va, new[] { value });
            Writes++;
            ExpectCopy(w, va, writable ? 1UL : 0, 1, "probe write");
        }

        // ---- fork and dispose ----------------------------------------------------------------------------

        private void Fork(ModelSpace m)
        {
            if (_spaces.Count >= MaxSpaces) return;
            Log($"space {m.Id}: Fork");
            AddressSpace childAreas = m.Areas.Fork();
            var child = new ModelSpace { Areas = childAreas, Id = _nextId++ };
            foreach ((ulong va, ModelPage mp) in m.Pages.ToList())
            {
                switch (mp.Kind)
                {
                    case Kind.Private:
                        child.Pages[va] = mp with { Cell = mp.Cell.Clone() };
                        break;
                    case Kind.Linear:
                        child.Pages[va] = mp;
                        break;
                    default:
                        // Raw mappings are outside every area: both spaces keep them read-only, sharing the frame.
                        m.Pages[va] = mp with { Rights = mp.Rights & ~PageFlags.W };
                        child.Pages[va] = m.Pages[va];
                        break;
                }
            }
            _spaces.Add(child);
            Forks++;
        }

        private void DisposeSpace(ModelSpace m)
        {
            Log($"space {m.Id}: Dispose");
            FaultsTaken += FaultsOf(m.Space);
            m.Areas.Dispose();
            m.Areas.Dispose(); // twice: harmless
            _spaces.Remove(m);
            if (_spaces.Count == 0) NewSpace();
        }

        // ---- checkpoints -----------------------------------------------------------------------------------

        /// <summary>One space's page table against the model: raw pages exactly, area pages within their rights.</summary>
        private void CheckMappings(ModelSpace m)
        {
            Log($"space {m.Id}: check mappings");
            Checks++;
            foreach (MappedSlot s in MappedSlots(m.Space))
            {
                Expect(s.Range.Length == Page && !s.Io, $"space {m.Id}: unexpected slot {s}");
                ulong va = s.Range.Start;
                Expect(m.Pages.TryGetValue(va, out ModelPage? mp), $"space {m.Id}: {s} is mapped but the model has no page there");
                PageFlags rights = s.Prop.Flags & PageFlags.RWX;
                if (mp!.Kind == Kind.Direct)
                {
                    Expect(rights == mp.Rights, $"space {m.Id}: raw page 0x{va:x} has {rights}, the model says {mp.Rights}");
                    Expect(s.Paddr == mp.Cell.Paddr, $"space {m.Id}: raw page 0x{va:x} maps 0x{s.Paddr:x}, the model says 0x{mp.Cell.Paddr:x}");
                }
                else
                {
                    Expect((rights & ~mp.Rights) == 0, $"space {m.Id}: page 0x{va:x} has {rights}, more than the area's {mp.Rights}");
                    if (mp.Kind == Kind.Linear)
                        Expect(s.Paddr == mp.Cell.Paddr, $"space {m.Id}: linear page 0x{va:x} maps 0x{s.Paddr:x}, the segment frame is 0x{mp.Cell.Paddr:x}");
                }
            }
            foreach ((ulong va, ModelPage mp) in m.Pages)
            {
                if (mp.Kind != Kind.Direct) continue;
                // Every raw page the model has must be in the table (areas may still be lazy).
                using Cursor c = m.Space.Cursor(VaddrRange.FromLength(va, Page));
                using VmQueriedItem? item = c.Query().Item;
                Expect(item is MappedRam, $"space {m.Id}: raw page 0x{va:x} is missing from the page table");
            }
        }

        /// <summary>Everything: mappings, host mirrors, reference counts, and every readable byte of every space.</summary>
        public void CheckAll()
        {
            Log("check all");
            foreach (ModelSpace m in _spaces) CheckMappings(m);
            CheckHostMirrors(_spaces.Select(s => s.Space));
            var handles = new Dictionary<ulong, int>();
            foreach (Cell c in _segmentCells) handles[c.Paddr] = 1;
            CheckReferenceCounts(_pool, _spaces.Select(s => s.Space), handles);
            foreach (ModelSpace m in _spaces)
            {
                foreach ((ulong va, ModelPage mp) in m.Pages)
                    if ((mp.Rights & PageFlags.R) != 0) ReadAndCompare(m, va, Page, "read-back");
            }
        }

        private static long FaultsOf(VmSpace space) => space.SpuriousFaults + space.HandledFaults + space.UnresolvedFaults;

        public void Finish()
        {
            foreach (ModelSpace m in _spaces)
            {
                FaultsTaken += FaultsOf(m.Space);
                m.Areas.Dispose();
            }
            _spaces.Clear();
            _segment.Dispose();
            VmSpace.Deactivate();
            Assert.That(_pool.FramesInUse, Is.Zero, "frames leaked after every space and handle was disposed");
            _pool.Dispose();
        }
    }

    [Test, CancelAfter(170_000)]
    public void Random_sequences_agree_with_the_reference_model()
    {
        int seed = Seed("model");
        int sequences = Soak ? 40 : 12;
        int opsPerSequence = Soak ? 10_000 : 2_000;
        const int checkEvery = 300;
        long ops = 0, reads = 0, writes = 0, faults = 0, forks = 0, taken = 0;
        var sw = Stopwatch.StartNew();
        for (int s = 0; s < sequences; s++)
        {
            int sequenceSeed = unchecked(seed + s * 7919);
            var run = new Run(sequenceSeed);
            try
            {
                for (int i = 0; i < opsPerSequence; i++)
                {
                    run.Step();
                    if ((i + 1) % checkEvery == 0) run.CheckAll();
                }
                run.CheckAll();
                run.Finish();
            }
            catch (Exception e) when (e is Divergence or AssertionException or UVmException or InvalidOperationException or ArgumentException)
            {
                Figures.Add("model divergences", 1);
                Figures.Note($"model: DIVERGENCE seed {seed}, sequence {s} (sequence seed {sequenceSeed}), operation {run.Ops}");
                Assert.Fail($"divergence from the model (replay with UVM_SEED={seed}; sequence {s}, operation {run.Ops}): {e.Message}\n" +
                            $"last operations:\n{run.Trace}\n{e}");
            }
            ops += run.Ops;
            reads += run.Reads;
            writes += run.Writes;
            faults += run.FaultsExpected;
            forks += run.Forks;
            taken += run.FaultsTaken;
        }
        Figures.Add("model operations", ops);
        Figures.Add("model sequences", sequences);
        Figures.Add("model fallible reads", reads);
        Figures.Add("model fallible writes", writes);
        Figures.Add("model accesses that had to fault (and did)", faults);
        Figures.Add("model forks", forks);
        Figures.Add("model page faults taken (resolved or not)", taken);
        Figures.Add("model divergences", 0);
        Figures.Note($"model: seed {seed}, {ops:N0} operations in {sw.Elapsed.TotalSeconds:F1} s");
        Assert.That(ops, Is.GreaterThanOrEqualTo(10_000));
    }
}
