using System.IO.Compression;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text;
using NUnit.Framework;
using UVm.Spaces;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// What a debugger needs to step into UVm, checked the way a debugger reads it: <c>UVm.dll</c>
/// carries its portable PDB embedded (the PDB's id matches the assembly's CodeView entry), every
/// source file inside it, and sequence points that put a public method on the line of its source
/// that declares it; the build is deterministic. <c>libuvm.so</c> is stripped, and its debug
/// information sits beside it in <c>libuvm.so.debug</c>, named by the library's
/// <c>.gnu_debuglink</c> and matching its build ID.
/// </summary>
/// <remarks><see cref="NuGetPackage"/> runs the same checks on the packed copies.</remarks>
[TestFixture]
public sealed class Symbols
{
    [Test]
    public void The_built_assembly_embeds_a_matching_PDB_with_its_sources() =>
        SymbolChecks.AssertDebuggable(typeof(VmSpace).Assembly.Location, Tools.RepoRoot);

    [Test]
    public void The_native_library_is_stripped_and_its_debug_file_is_beside_it()
    {
        string native = Path.Combine(Tools.RepoRoot, "artifacts", "native");
        SymbolChecks.AssertStrippedWithDebugFile(Path.Combine(native, "libuvm.so"), Path.Combine(native, "libuvm.so.debug"));
    }
}

/// <summary>The checks of <see cref="Symbols"/>, for any copy of <c>UVm.dll</c> and <c>libuvm.so</c>.</summary>
internal static class SymbolChecks
{
    private static readonly Guid EmbeddedSource = new("0E8A571B-6926-466E-B4AD-8AB04611F5FE");

    /// <summary>
    /// Reads the PDB embedded in <paramref name="dll"/> and checks it as a debugger would: it is
    /// the assembly's own (ids match), it holds the text of every C# file under
    /// <c>src/UVm</c> of <paramref name="repoRoot"/>, byte for byte, and
    /// <c>VmSpace.Activate</c> starts on a line of <c>VmSpace.cs</c> that names it. With
    /// <paramref name="mappedPaths"/>, no document path may name the folder it was built in.
    /// </summary>
    internal static void AssertDebuggable(string dll, string repoRoot, bool mappedPaths = false)
    {
        using var pe = new PEReader(File.OpenRead(dll));
        DebugDirectoryEntry[] entries = pe.ReadDebugDirectory().ToArray();
        Assert.That(entries.Select(e => e.Type), Does.Contain(DebugDirectoryEntryType.Reproducible), $"{dll}: built deterministically");
        DebugDirectoryEntry codeView = entries.Single(e => e.Type == DebugDirectoryEntryType.CodeView);
        DebugDirectoryEntry embedded = entries.SingleOrDefault(e => e.Type == DebugDirectoryEntryType.EmbeddedPortablePdb);
        Assert.That(embedded.DataSize, Is.GreaterThan(0), $"{dll}: has an embedded portable PDB");

        using MetadataReaderProvider provider = pe.ReadEmbeddedPortablePdbDebugDirectoryData(embedded);
        MetadataReader pdb = provider.GetMetadataReader();
        CodeViewDebugDirectoryData cv = pe.ReadCodeViewDebugDirectoryData(codeView);
        byte[] pdbId = pdb.DebugMetadataHeader!.Id.ToArray();
        Assert.That(new Guid(pdbId.AsSpan(0, 16)), Is.EqualTo(cv.Guid), "the PDB is this assembly's: its id matches the CodeView entry");
        Assert.That(BitConverter.ToUInt32(pdbId, 16), Is.EqualTo(codeView.Stamp), "the PDB's stamp matches the CodeView entry");

        // Every document, with its embedded text.
        var sources = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DocumentHandle h in pdb.Documents)
        {
            Document doc = pdb.GetDocument(h);
            string name = pdb.GetString(doc.Name).Replace('\\', '/');
            if (mappedPaths)
                Assert.That(name, Does.Not.Contain(repoRoot.Replace('\\', '/')), "a CI-flagged build maps source paths (/_/...)");
            string? text = EmbeddedText(pdb, h);
            int at = name.IndexOf("/src/UVm/", StringComparison.Ordinal);
            if (at >= 0 && text is not null) sources[name[(at + 1)..]] = text;
        }
        string srcDir = Path.Combine(repoRoot, "src", "UVm");
        string[] expected = Directory.GetFiles(srcDir, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .Select(f => Path.GetRelativePath(repoRoot, f).Replace('\\', '/')).Order(StringComparer.Ordinal).ToArray();
        Assert.That(expected, Is.Not.Empty);
        Assert.That(sources.Keys, Is.SupersetOf(expected), "the PDB embeds every source file of src/UVm");
        foreach (string file in expected)
            Assert.That(sources[file], Is.EqualTo(File.ReadAllText(Path.Combine(repoRoot, file))), $"{file}: the embedded text is the repository's");

        // Stepping in: the method's first sequence point is in VmSpace.cs, on a line that names it.
        using var peMeta = new PEReader(File.OpenRead(dll));
        MetadataReader md = peMeta.GetMetadataReader();
        MethodDefinitionHandle method = md.MethodDefinitions.Single(m =>
        {
            MethodDefinition def = md.GetMethodDefinition(m);
            TypeDefinition type = md.GetTypeDefinition(def.GetDeclaringType());
            return md.GetString(def.Name) == "Activate" && md.GetString(type.Name) == "VmSpace" && def.GetParameters().Count == 0;
        });
        SequencePoint first = pdb.GetMethodDebugInformation(method).GetSequencePoints().First(p => !p.IsHidden);
        string document = pdb.GetString(pdb.GetDocument(first.Document).Name).Replace('\\', '/');
        Assert.That(document, Does.EndWith("src/UVm/Spaces/VmSpace.cs"), "VmSpace.Activate steps into VmSpace.cs");
        string[] lines = sources["src/UVm/Spaces/VmSpace.cs"].Split('\n');
        int declaration = Array.FindLastIndex(lines, first.StartLine - 1, l => l.Contains(" Activate()", StringComparison.Ordinal) && l.Contains("public ", StringComparison.Ordinal));
        Assert.That(declaration, Is.GreaterThanOrEqualTo(0).And.GreaterThan(first.StartLine - 12),
            $"line {first.StartLine} of VmSpace.cs is in the body of Activate()");
    }

    /// <summary>The text a PDB embeds for <paramref name="doc"/>, or null.</summary>
    private static string? EmbeddedText(MetadataReader pdb, DocumentHandle doc)
    {
        foreach (CustomDebugInformationHandle h in pdb.GetCustomDebugInformation(doc))
        {
            CustomDebugInformation info = pdb.GetCustomDebugInformation(h);
            if (pdb.GetGuid(info.Kind) != EmbeddedSource) continue;
            byte[] blob = pdb.GetBlobBytes(info.Value);
            int size = BitConverter.ToInt32(blob, 0);          // 0: stored as is; else deflated, this many bytes
            byte[] bytes;
            if (size == 0) bytes = blob[4..];
            else
            {
                bytes = new byte[size];
                using var inflate = new DeflateStream(new MemoryStream(blob, 4, blob.Length - 4), CompressionMode.Decompress);
                inflate.ReadExactly(bytes);
            }
            return new UTF8Encoding(false).GetString(bytes).TrimStart('\uFEFF');
        }
        return null;
    }

    /// <summary>
    /// <paramref name="library"/> has no DWARF and no symbol table, a <c>.gnu_debuglink</c> to
    /// <c>libuvm.so.debug</c>, and the same build ID as <paramref name="debugFile"/>, which holds
    /// the DWARF (read with binutils' <c>readelf</c>, which the C compiler brings).
    /// </summary>
    internal static void AssertStrippedWithDebugFile(string library, string debugFile)
    {
        Assert.That(File.Exists(library), Is.True, library);
        Assert.That(File.Exists(debugFile), Is.True, $"{debugFile}: src/Native/build.sh keeps the debug information beside the library");
        string sections = ReadElf("-S", "-W", library);
        Assert.That(sections, Does.Not.Contain(".debug_info").And.Not.Contain(".symtab"), $"{library} is stripped");
        Assert.That(sections, Does.Contain(".gnu_debuglink"));
        Assert.That(ReadElf("--string-dump=.gnu_debuglink", library), Does.Contain("libuvm.so.debug"), "the link names the debug file");
        Assert.That(ReadElf("-S", "-W", debugFile), Does.Contain(".debug_info"), $"{debugFile} holds the DWARF");
        string id = BuildId(library);
        Assert.That(id, Is.Not.Empty, $"{library} has a build ID");
        Assert.That(BuildId(debugFile), Is.EqualTo(id), "the debug file is the library's (same build ID)");
    }

    private static string BuildId(string file) =>
        ReadElf("-n", file).Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("Build ID:", StringComparison.Ordinal))?["Build ID:".Length..].Trim() ?? "";

    private static string ReadElf(params string[] args)
    {
        (int code, string output) = Tools.Run("readelf", args, Path.GetTempPath(), TimeSpan.FromSeconds(30));
        Assert.That(code, Is.Zero, $"readelf {string.Join(' ', args)}:\n{output}");
        return output;
    }
}
