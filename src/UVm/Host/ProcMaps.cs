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
internal static class ProcMaps
{
    /// <summary>The mappings that intersect <c>[start, end)</c>, in address order.</summary>
    internal static List<HostVma> Read(ulong start, ulong end)
    {
        var result = new List<HostVma>();
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            HostVma vma = Parse(line);
            if (vma.End <= start || vma.Start >= end) continue;
            result.Add(vma);
        }
        return result;
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
