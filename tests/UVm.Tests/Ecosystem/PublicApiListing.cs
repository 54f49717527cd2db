using System.Reflection;
using System.Text;

namespace UVm.Tests.Ecosystem;

/// <summary>
/// Writes the declarations of public types, by reflection: one line per type (sorted by full
/// name) with its kind, modifiers, base type, interfaces and generic constraints. This is what
/// <c>PublicAPI.Shipped.txt</c>, the API analyzer's file, does not record: the analyzer tracks
/// every member and each type's name, but not whether a type is a class or a struct, sealed or
/// not, nor what it derives from and implements.
/// </summary>
internal static class PublicApiListing
{
    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Dictionary<Type, string> s_keywords = new()
    {
        [typeof(void)] = "void", [typeof(bool)] = "bool", [typeof(byte)] = "byte", [typeof(sbyte)] = "sbyte",
        [typeof(short)] = "short", [typeof(ushort)] = "ushort", [typeof(int)] = "int", [typeof(uint)] = "uint",
        [typeof(long)] = "long", [typeof(ulong)] = "ulong", [typeof(char)] = "char", [typeof(float)] = "float",
        [typeof(double)] = "double", [typeof(decimal)] = "decimal", [typeof(string)] = "string", [typeof(object)] = "object",
        [typeof(nint)] = "nint", [typeof(nuint)] = "nuint",
    };

    /// <summary>
    /// The declaration lines of the exported types of <paramref name="assembly"/> whose names
    /// (namespace-qualified, nested with a dot, generic parameters left out) are in
    /// <paramref name="names"/>, after <paramref name="header"/>; lines end with <c>\n</c>.
    /// </summary>
    internal static string Declarations(Assembly assembly, IReadOnlySet<string> names, string header)
    {
        var text = new StringBuilder();
        text.Append(header).Append('\n');
        foreach (Type type in assembly.GetExportedTypes().Where(t => names.Contains(FullName(t))).OrderBy(t => FullName(t), StringComparer.Ordinal))
            text.Append(TypeLine(type)).Append('\n');
        return text.ToString();
    }

    // ---- types --------------------------------------------------------------------------------

    private static string TypeLine(Type t)
    {
        var parts = new List<string> { t.IsNestedFamily || t.IsNestedFamORAssem ? "protected" : "public" };
        if (t.IsEnum)
        {
            string flags = t.IsDefined(typeof(FlagsAttribute)) ? "[Flags] " : "";
            return $"{flags}public enum {FullName(t)} : {Name(Enum.GetUnderlyingType(t))}";
        }
        if (typeof(Delegate).IsAssignableFrom(t.BaseType) && t != typeof(MulticastDelegate))
        {
            // Its signature is its Invoke method, which the analyzer tracks.
            return $"public delegate {FullName(t)}{GenericParams(t)}{Constraints(t.GetGenericArguments())}";
        }
        if (t.IsInterface) parts.Add("interface");
        else if (t.IsValueType)
        {
            if (IsReadOnly(t)) parts.Add("readonly");
            if (t.IsByRefLike) parts.Add("ref");
            parts.Add(IsRecord(t) ? "record struct" : "struct");
        }
        else
        {
            if (t.IsAbstract && t.IsSealed) parts.Add("static");
            else if (t.IsAbstract) parts.Add("abstract");
            else if (t.IsSealed) parts.Add("sealed");
            parts.Add(IsRecord(t) ? "record" : "class");
        }
        var bases = new List<string>();
        if (t.IsClass && t.BaseType is { } b && b != typeof(object)) bases.Add(Name(b));
        bases.AddRange(t.GetInterfaces().Where(i => i.IsVisible).Select(i => Name(i)).OrderBy(n => n, StringComparer.Ordinal));
        string line = $"{string.Join(' ', parts)} {FullName(t)}{GenericParams(t)}";
        if (bases.Count > 0) line += " : " + string.Join(", ", bases);
        return line + Constraints(t.IsGenericTypeDefinition ? t.GetGenericArguments() : []);
    }

    private static bool IsRecord(Type t) =>
        t.GetMethod("<Clone>$", Declared) is not null || (t.IsValueType && t.GetMethod("PrintMembers", Declared) is not null);

    private static bool IsReadOnly(ICustomAttributeProvider p) =>
        p.GetCustomAttributes(false).Any(a => a.GetType().FullName == "System.Runtime.CompilerServices.IsReadOnlyAttribute");

    private static bool Has(ICustomAttributeProvider p, string fullName) =>
        p.GetCustomAttributes(false).Any(a => a.GetType().FullName == fullName);

    // ---- names -----------------------------------------------------------------------------

    private static string GenericParams(Type t) =>
        t.IsGenericTypeDefinition ? $"<{string.Join(", ", t.GetGenericArguments().Skip(t.DeclaringType?.GetGenericArguments().Length ?? 0).Select(a => a.Name))}>" : "";

    private static string Constraints(Type[] args)
    {
        var text = new StringBuilder();
        foreach (Type a in args)
        {
            var cs = new List<string>();
            GenericParameterAttributes g = a.GenericParameterAttributes;
            bool isStruct = g.HasFlag(GenericParameterAttributes.NotNullableValueTypeConstraint);
            if (g.HasFlag(GenericParameterAttributes.ReferenceTypeConstraint)) cs.Add("class");
            if (isStruct) cs.Add(Has(a, "System.Runtime.CompilerServices.IsUnmanagedAttribute") ? "unmanaged" : "struct");
            cs.AddRange(a.GetGenericParameterConstraints().Where(c => c != typeof(ValueType)).Select(c => Name(c)).OrderBy(n => n, StringComparer.Ordinal));
            if (g.HasFlag(GenericParameterAttributes.DefaultConstructorConstraint) && !isStruct) cs.Add("new()");
            if (((int)g & 0x20) != 0) cs.Add("allows ref struct");
            if (cs.Count > 0) text.Append($" where {a.Name} : {string.Join(", ", cs)}");
        }
        return text.ToString();
    }

    /// <summary>A C# spelling of <paramref name="t"/>; <paramref name="tupleNames"/> are consumed in pre-order, as the compiler encodes them.</summary>
    private static string Name(Type t, NullabilityInfo? n = null, List<string?>? tupleNames = null)
    {
        int position = 0;
        return NameAt(t, n, tupleNames ?? [], ref position);
    }

    private static string NameAt(Type t, NullabilityInfo? n, List<string?> names, ref int position)
    {
        if (t.IsPointer) return NameAt(t.GetElementType()!, null, names, ref position) + "*";
        if (t.IsArray) return NameAt(t.GetElementType()!, n?.ElementType, names, ref position) + "[]" + Question(t, n);
        if (t.IsGenericParameter) return t.Name + (n is { ReadState: NullabilityState.Nullable } && !t.IsValueType ? "?" : "");
        if (Nullable.GetUnderlyingType(t) is { } inner)
            return NameAt(inner, n?.GenericTypeArguments.FirstOrDefault(), names, ref position) + "?";
        if (s_keywords.TryGetValue(t, out string? keyword)) return keyword + Question(t, n);
        Type[] args = t.GetGenericArguments();
        if (t.IsGenericType && t.FullName?.StartsWith("System.ValueTuple`", StringComparison.Ordinal) == true && args.Length <= 7)
        {
            int first = position;
            position += args.Length;
            var parts = new List<string>();
            for (int i = 0; i < args.Length; i++)
            {
                string element = NameAt(args[i], n?.GenericTypeArguments.ElementAtOrDefault(i), names, ref position);
                string? name = first + i < names.Count ? names[first + i] : null;
                parts.Add(name is null ? element : $"{element} {name}");
            }
            return $"({string.Join(", ", parts)})";
        }
        string baseName = FullName(t.IsGenericType ? t.GetGenericTypeDefinition() : t);
        if (!t.IsGenericType || t.IsGenericTypeDefinition) return baseName + (t.IsGenericTypeDefinition ? GenericParams(t) : "") + Question(t, n);
        var argNames = new List<string>();
        for (int i = 0; i < args.Length; i++) argNames.Add(NameAt(args[i], n?.GenericTypeArguments.ElementAtOrDefault(i), names, ref position));
        return $"{baseName}<{string.Join(", ", argNames)}>{Question(t, n)}";
    }

    private static string Question(Type t, NullabilityInfo? n) => !t.IsValueType && n is { ReadState: NullabilityState.Nullable } ? "?" : "";

    /// <summary>Namespace-qualified name, nested types joined with a dot, generic arity removed.</summary>
    private static string FullName(Type t)
    {
        string name = ShortName(t);
        return t.DeclaringType is { } outer ? $"{FullName(outer)}.{name}" : string.IsNullOrEmpty(t.Namespace) ? name : $"{t.Namespace}.{name}";
    }

    private static string ShortName(Type t)
    {
        int tick = t.Name.IndexOf('`');
        return tick < 0 ? t.Name : t.Name[..tick];
    }
}
