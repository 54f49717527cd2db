using System.Globalization;

namespace UVm.Host;

/// <summary>One line of <c>/proc/self/maps</c>.</summary>
/// <param name="Start">First host address.</param>
/// <param name="End">First host address past the mapping.</param>
/// <param name="Perms">The four permission characters, e.g. <c>rw-s</c>.</param>
/// <param name="Offset">Offset in the backing file.</param>
/// <param name="Dev">Device of the backing file, <c>major:minor</c> as printed (hex).</param>
/// <param name="Inode">Inode of the backing file (0 for anonymous memory).</param>
/// <param name="Path">The path column, possibly empty.</param>
internal readonly record struct HostVma(ulong Start, ulong End, string Perms, ulong Offset, string Dev, ulong Inode, string Path);

/// <summary>Reads the host's own view of this process's mappings.</summary>
/// <remarks>
/// <para>The file is not read atomically, whatever the buffer: the kernel's <c>seq_file</c> hands
/// out at most one buffer of its own per <c>read</c> call (a page, more only when one line does not
/// fit), taking the mapping locks anew for each call (since Linux 6.17 per-mapping locks, before
/// that the mmap lock). A 200 KB file takes some 50 calls. When a thread changes mappings between
/// two calls, lines of the mappings it changed can show twice, overlap or be missed. A mapping
/// that does not change during the read is printed exactly: the kernel documents that whatever
/// stays at an address for the whole walk is printed, and the walk resumes after the last
/// address printed. A caller that needs an exact view of a range keeps that range from changing
/// while it reads (<c>HostMirror</c> holds the space's whole page table).</para>
/// <para>The file is read into one buffer large enough for all of it (grown and read again when it
/// was not), so lines are parsed from one copy.</para>
/// </remarks>
internal static class ProcMaps
{
    [ThreadStatic] private static byte[]? t_buffer;

    /// <summary>The mappings that intersect <c>[start, end)</c>, in address order.</summary>
    internal static List<HostVma> Read(ulong start, ulong end)
    {
        var result = new List<HostVma>();
        ReadOnlySpan<byte> text = ReadWhole();
        while (!text.IsEmpty)
        {
            int nl = text.IndexOf((byte)'\n');
            ReadOnlySpan<byte> line = nl < 0 ? text : text[..nl];
            text = nl < 0 ? default : text[(nl + 1)..];
            if (line.IsEmpty) continue;
            HostVma vma = Parse(System.Text.Encoding.ASCII.GetString(line));
            if (vma.End <= start || vma.Start >= end) continue;
            result.Add(vma);
        }
        return result;
    }

    /// <summary>The whole file, read into a buffer big enough that one <c>read</c> usually takes it all.</summary>
    private static ReadOnlySpan<byte> ReadWhole()
    {
        byte[] buffer = t_buffer ??= new byte[256 << 10];
        while (true)
        {
            using var file = new FileStream("/proc/self/maps", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            int total = 0, n;
            while (total < buffer.Length && (n = file.Read(buffer, total, buffer.Length - total)) > 0) total += n;
            if (total < buffer.Length) return buffer.AsSpan(0, total);
            buffer = t_buffer = new byte[buffer.Length * 2]; // did not fit: read it all again, in one piece
        }
    }

    internal static HostVma Parse(string line)
    {
        // start-end perms offset dev inode [path]
        string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
        int dash = f[0].IndexOf('-');
        ulong s = ulong.Parse(f[0].AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        ulong e = ulong.Parse(f[0].AsSpan(dash + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        ulong off = ulong.Parse(f[2], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        ulong ino = ulong.Parse(f[4], CultureInfo.InvariantCulture);
        return new HostVma(s, e, f[1], off, f[3], ino, f.Length > 5 ? f[5].Trim() : "");
    }
}
