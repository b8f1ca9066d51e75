using System.Globalization;
using System.Text.Json;

namespace Drydock.TestKit;

/// <summary>One extent of <c>nbdinfo --map</c>: for <c>base:allocation</c> bit 0 = hole, bit 1 = zero; for
/// <c>qemu:dirty-bitmap:*</c> bit 0 = dirty.</summary>
/// <param name="Offset">Start, in bytes.</param>
/// <param name="Length">Length, in bytes.</param>
/// <param name="Type">The context's flags for this extent.</param>
/// <param name="Description">nbdinfo's words for the flags ("data", "hole,zero", "dirty", …).</param>
public sealed record NbdMapExtent(long Offset, long Length, uint Type, string Description)
{
    /// <summary>One past the last byte.</summary>
    public long End => Offset + Length;
}

/// <summary>What <c>nbdinfo --json</c> says about one export.</summary>
/// <param name="ExportName">The export name.</param>
/// <param name="Size">Export size in bytes.</param>
/// <param name="IsReadOnly">NBD_FLAG_READ_ONLY.</param>
/// <param name="CanMultiConn">NBD_FLAG_CAN_MULTI_CONN.</param>
/// <param name="CanFlush">NBD_FLAG_SEND_FLUSH.</param>
/// <param name="CanFua">NBD_FLAG_SEND_FUA.</param>
/// <param name="CanTrim">NBD_FLAG_SEND_TRIM.</param>
/// <param name="CanZero">NBD_FLAG_SEND_WRITE_ZEROES.</param>
/// <param name="CanFastZero">NBD_FLAG_SEND_FAST_ZERO.</param>
/// <param name="CanCache">NBD_FLAG_SEND_CACHE.</param>
/// <param name="MetaContexts">The meta contexts the server lists for the export.</param>
/// <param name="BlockSizeMinimum">Minimum block size, when the server states one.</param>
/// <param name="BlockSizePreferred">Preferred block size, when stated.</param>
/// <param name="BlockSizeMaximum">Maximum payload, when stated.</param>
/// <param name="Tls">Whether the connection used TLS.</param>
/// <param name="Structured">Whether structured replies were negotiated.</param>
/// <param name="Json">nbdinfo's whole document, for anything else.</param>
public sealed record NbdExportInfo(
    string ExportName,
    long Size,
    bool IsReadOnly,
    bool CanMultiConn,
    bool CanFlush,
    bool CanFua,
    bool CanTrim,
    bool CanZero,
    bool CanFastZero,
    bool CanCache,
    IReadOnlyList<string> MetaContexts,
    long? BlockSizeMinimum,
    long? BlockSizePreferred,
    long? BlockSizeMaximum,
    bool Tls,
    bool Structured,
    JsonElement Json);

/// <summary>A bitmap as <c>qemu-img info</c> lists it.</summary>
/// <param name="Name">Bitmap name.</param>
/// <param name="Granularity">Bytes per bit.</param>
/// <param name="Flags">qcow2 flags ("auto" = enabled, "in-use" = inconsistent when not open).</param>
public sealed record QemuBitmapInfo(string Name, long Granularity, IReadOnlyList<string> Flags)
{
    /// <summary>Whether the bitmap records writes (flag <c>auto</c>).</summary>
    public bool IsEnabled => Flags.Contains("auto");
}

/// <summary>What <c>qemu-img info --output=json</c> says about an image.</summary>
/// <param name="Format">Format name (qcow2, raw).</param>
/// <param name="VirtualSize">Guest-visible size in bytes.</param>
/// <param name="ActualSize">Bytes allocated on the host, when reported.</param>
/// <param name="BackingFile">Backing file, when any.</param>
/// <param name="Bitmaps">Persistent bitmaps (qcow2).</param>
/// <param name="Json">The whole document.</param>
public sealed record QemuImageInfo(string Format, long VirtualSize, long? ActualSize, string? BackingFile, IReadOnlyList<QemuBitmapInfo> Bitmaps, JsonElement Json);

/// <summary>One extent of <c>qemu-img map --output=json</c>.</summary>
/// <param name="Offset">Start, in bytes.</param>
/// <param name="Length">Length, in bytes.</param>
/// <param name="Data">Whether the extent holds data (false: a hole).</param>
/// <param name="Zero">Whether the extent reads as zeros.</param>
public sealed record QemuMapExtent(long Offset, long Length, bool Data, bool Zero);

/// <summary>Options of <c>nbdcopy</c>.</summary>
public sealed record NbdCopyOptions
{
    /// <summary><c>--connections</c>; default: nbdcopy's choice.</summary>
    public int? Connections { get; init; }

    /// <summary><c>--requests</c> (in flight per connection); default: nbdcopy's choice.</summary>
    public int? Requests { get; init; }

    /// <summary><c>--request-size</c> in bytes; default: nbdcopy's choice.</summary>
    public int? RequestSize { get; init; }

    /// <summary><c>--flush</c> at the end.</summary>
    public bool Flush { get; init; }

    /// <summary>Anything else, appended before the source.</summary>
    public IReadOnlyList<string> ExtraArguments { get; init; } = [];

    /// <summary>Throw when nbdcopy fails (default); false to inspect the result instead.</summary>
    public bool ThrowOnFailure { get; init; } = true;
}

/// <summary>
/// The peer tools, wrapped: <c>nbdinfo</c>, <c>nbdcopy</c> (libnbd-bin), <c>qemu-img</c> and
/// <c>qemu-io</c> (qemu-utils). Targets are image paths or NBD URIs as the tools accept them.
/// </summary>
public static class NbdTools
{
    /// <summary><c>nbdinfo --json --no-content URI</c>, for the URI's export.</summary>
    public static async Task<NbdExportInfo> InfoAsync(string uri, CancellationToken cancellationToken = default)
    {
        var result = await ProcessRunner.RunAsync("nbdinfo", ["--json", "--no-content", uri], cancellationToken);
        using var document = JsonDocument.Parse(result.StandardOutput);
        var root = document.RootElement.Clone();
        var export = root.GetProperty("exports")[0];
        return new NbdExportInfo(
            export.GetProperty("export-name").GetString() ?? string.Empty,
            export.GetProperty("export-size").GetInt64(),
            Flag(export, "is_read_only"),
            Flag(export, "can_multi_conn"),
            Flag(export, "can_flush"),
            Flag(export, "can_fua"),
            Flag(export, "can_trim"),
            Flag(export, "can_zero"),
            Flag(export, "can_fast_zero"),
            Flag(export, "can_cache"),
            export.TryGetProperty("contexts", out var contexts) ? [.. contexts.EnumerateArray().Select(c => c.GetString() ?? string.Empty)] : [],
            OptionalInt64(export, "block_size_minimum"),
            OptionalInt64(export, "block_size_preferred"),
            OptionalInt64(export, "block_size_maximum"),
            Flag(root, "TLS"),
            Flag(root, "structured"),
            root);
    }

    /// <summary><c>nbdinfo --size URI</c>.</summary>
    public static async Task<long> SizeAsync(string uri, CancellationToken cancellationToken = default)
    {
        var result = await ProcessRunner.RunAsync("nbdinfo", ["--size", uri], cancellationToken);
        return long.Parse(result.StandardOutput.Trim(), NumberStyles.None, CultureInfo.InvariantCulture);
    }

    /// <summary>The export names <c>nbdinfo --list --json URI</c> reports.</summary>
    public static async Task<IReadOnlyList<string>> ListExportsAsync(string uri, CancellationToken cancellationToken = default)
    {
        var result = await ProcessRunner.RunAsync("nbdinfo", ["--list", "--json", "--no-content", uri], cancellationToken);
        using var document = JsonDocument.Parse(result.StandardOutput);
        return [.. document.RootElement.GetProperty("exports").EnumerateArray().Select(e => e.GetProperty("export-name").GetString() ?? string.Empty)];
    }

    /// <summary>
    /// <c>nbdinfo --map[=CONTEXT] --json URI</c>: the extents of <paramref name="context"/>
    /// (default <c>base:allocation</c>) over the whole export.
    /// </summary>
    public static async Task<IReadOnlyList<NbdMapExtent>> MapAsync(string uri, string? context = null, CancellationToken cancellationToken = default)
    {
        var map = context is null ? "--map" : "--map=" + context;
        var result = await ProcessRunner.RunAsync("nbdinfo", [map, "--json", uri], cancellationToken);
        using var document = JsonDocument.Parse(result.StandardOutput);
        return [.. document.RootElement.EnumerateArray().Select(e => new NbdMapExtent(
            e.GetProperty("offset").GetInt64(),
            e.GetProperty("length").GetInt64(),
            e.GetProperty("type").GetUInt32(),
            e.TryGetProperty("description", out var d) ? d.GetString() ?? string.Empty : string.Empty))];
    }

    /// <summary>The text of <c>nbdinfo --map[=CONTEXT] URI</c> (the human form, e.g. to compare with another tool's output).</summary>
    public static async Task<string> MapTextAsync(string uri, string? context = null, CancellationToken cancellationToken = default)
    {
        var map = context is null ? "--map" : "--map=" + context;
        return (await ProcessRunner.RunAsync("nbdinfo", [map, uri], cancellationToken)).StandardOutput;
    }

    /// <summary>
    /// Parses the human form of <c>nbdinfo --map</c> (lines of <c>OFFSET LENGTH TYPE DESCRIPTION</c>), e.g. to
    /// check that another tool prints the same map.
    /// </summary>
    /// <exception cref="FormatException">A line is not in that form.</exception>
    public static IReadOnlyList<NbdMapExtent> ParseMapText(string text)
    {
        var extents = new List<NbdMapExtent>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = line.Split(' ', 4, StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 3
                || !long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var offset)
                || !long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var length)
                || !uint.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out var type))
            {
                throw new FormatException($"Not an nbdinfo --map line: '{line}'.");
            }

            extents.Add(new NbdMapExtent(offset, length, type, fields.Length > 3 ? fields[3].Trim() : string.Empty));
        }

        return extents;
    }

    /// <summary>
    /// Runs <c>nbdinfo</c> with any arguments and returns the result without throwing on failure (for
    /// tests that expect a refusal).
    /// </summary>
    public static Task<ProcessResult> RunNbdInfoAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken = default) =>
        ProcessRunner.RunAsync("nbdinfo", arguments, ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, cancellationToken);

    /// <summary><c>nbdcopy [options] SOURCE DESTINATION</c>; either may be a URI, a file, <c>null:</c> or <c>-</c>.</summary>
    public static Task<ProcessResult> CopyAsync(string source, string destination, NbdCopyOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new NbdCopyOptions();
        var arguments = new List<string>();
        if (options.Connections is { } connections)
        {
            arguments.Add("--connections=" + connections.ToString(CultureInfo.InvariantCulture));
        }

        if (options.Requests is { } requests)
        {
            arguments.Add("--requests=" + requests.ToString(CultureInfo.InvariantCulture));
        }

        if (options.RequestSize is { } requestSize)
        {
            arguments.Add("--request-size=" + requestSize.ToString(CultureInfo.InvariantCulture));
        }

        if (options.Flush)
        {
            arguments.Add("--flush");
        }

        arguments.AddRange(options.ExtraArguments);
        arguments.Add(source);
        arguments.Add(destination);
        return ProcessRunner.RunAsync("nbdcopy", arguments, ProcessRunOptions.Default with { ThrowOnNonZeroExit = options.ThrowOnFailure }, cancellationToken);
    }

    /// <summary>
    /// <c>qemu-img compare [-s] [-f A] [-F B] A B</c>: true when the guest-visible contents are identical
    /// (with <paramref name="strict"/>, allocation must match too).
    /// </summary>
    /// <exception cref="ProcessFailedException">qemu-img could not compare (exit code 2 or more).</exception>
    public static async Task<bool> CompareAsync(string first, string? firstFormat, string second, string? secondFormat, bool strict = false, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "compare" };
        if (strict)
        {
            arguments.Add("-s");
        }

        if (firstFormat is not null)
        {
            arguments.AddRange(["-f", firstFormat]);
        }

        if (secondFormat is not null)
        {
            arguments.AddRange(["-F", secondFormat]);
        }

        arguments.AddRange([first, second]);
        var result = await ProcessRunner.RunAsync("qemu-img", arguments, ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, cancellationToken);
        return result.ExitCode switch
        {
            0 => true,
            1 => false,
            _ => throw new ProcessFailedException(result),
        };
    }

    /// <summary>
    /// <c>qemu-img check --output=json -f qcow2 IMAGE</c>: returns qemu-img's exit code (0 clean, 2 corrupt, 3 leaked
    /// clusters) and its report, so a failing assertion can show what was found.
    /// </summary>
    public static async Task<(int ExitCode, string Report)> CheckImageAsync(string image, CancellationToken cancellationToken = default)
    {
        var result = await ProcessRunner.RunAsync("qemu-img", ["check", "--output=json", "-f", "qcow2", image], ProcessRunOptions.Default with { ThrowOnNonZeroExit = false }, cancellationToken);
        return (result.ExitCode, result.StandardOutput + result.StandardError);
    }

    /// <summary><c>qemu-img convert -f IN -O OUT SOURCE DESTINATION</c> (sparse by default).</summary>
    public static Task<ProcessResult> ConvertAsync(string source, string? sourceFormat, string destination, string destinationFormat, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "convert" };
        if (sourceFormat is not null)
        {
            arguments.AddRange(["-f", sourceFormat]);
        }

        arguments.AddRange(["-O", destinationFormat, source, destination]);
        return ProcessRunner.RunAsync("qemu-img", arguments, cancellationToken);
    }

    /// <summary><c>qemu-img info --output=json [-f FMT] [-U] TARGET</c>, parsed.</summary>
    public static async Task<QemuImageInfo> ImageInfoAsync(string target, string? format = null, bool forceShare = false, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "info", "--output=json" };
        if (format is not null)
        {
            arguments.AddRange(["-f", format]);
        }

        if (forceShare)
        {
            arguments.Add("-U");
        }

        arguments.Add(target);
        var result = await ProcessRunner.RunAsync("qemu-img", arguments, cancellationToken);
        using var document = JsonDocument.Parse(result.StandardOutput);
        var root = document.RootElement.Clone();
        var bitmaps = new List<QemuBitmapInfo>();
        if (root.TryGetProperty("format-specific", out var specific)
            && specific.TryGetProperty("data", out var data)
            && data.TryGetProperty("bitmaps", out var list))
        {
            foreach (var bitmap in list.EnumerateArray())
            {
                bitmaps.Add(new QemuBitmapInfo(
                    bitmap.GetProperty("name").GetString() ?? string.Empty,
                    bitmap.GetProperty("granularity").GetInt64(),
                    [.. bitmap.GetProperty("flags").EnumerateArray().Select(f => f.GetString() ?? string.Empty)]));
            }
        }

        return new QemuImageInfo(
            root.GetProperty("format").GetString() ?? string.Empty,
            root.GetProperty("virtual-size").GetInt64(),
            OptionalInt64(root, "actual-size"),
            root.TryGetProperty("backing-filename", out var backing) ? backing.GetString() : null,
            bitmaps,
            root);
    }

    /// <summary><c>qemu-img map --output=json [-f FMT] TARGET</c>, parsed.</summary>
    public static async Task<IReadOnlyList<QemuMapExtent>> ImageMapAsync(string target, string? format = null, CancellationToken cancellationToken = default)
    {
        var arguments = new List<string> { "map", "--output=json" };
        if (format is not null)
        {
            arguments.AddRange(["-f", format]);
        }

        arguments.Add(target);
        var result = await ProcessRunner.RunAsync("qemu-img", arguments, cancellationToken);
        using var document = JsonDocument.Parse(result.StandardOutput);
        return [.. document.RootElement.EnumerateArray().Select(e => new QemuMapExtent(
            e.GetProperty("start").GetInt64(),
            e.GetProperty("length").GetInt64(),
            e.GetProperty("data").GetBoolean(),
            e.GetProperty("zero").GetBoolean()))];
    }

    /// <summary>
    /// <c>qemu-io [-f FMT] [-r] [-U] -c CMD… TARGET</c> on an image file or an NBD URI (format <c>raw</c>
    /// for URIs). With <paramref name="throwOnFailure"/> false a failed command (e.g. a pattern mismatch,
    /// which qemu-io reports with exit code 1) is returned rather than thrown.
    /// </summary>
    public static Task<ProcessResult> QemuIoAsync(
        string target,
        string? format,
        IReadOnlyList<string> commands,
        bool readOnly = false,
        bool forceShare = false,
        bool throwOnFailure = true,
        CancellationToken cancellationToken = default)
    {
        var arguments = new List<string>();
        if (format is not null)
        {
            arguments.AddRange(["-f", format]);
        }

        if (readOnly)
        {
            arguments.Add("-r");
        }

        if (forceShare)
        {
            arguments.Add("-U");
        }

        foreach (var command in commands)
        {
            arguments.AddRange(["-c", command]);
        }

        arguments.Add(target);
        return ProcessRunner.RunAsync("qemu-io", arguments, ProcessRunOptions.Default with { ThrowOnNonZeroExit = throwOnFailure }, cancellationToken);
    }

    /// <summary>
    /// Whether <paramref name="length"/> bytes at <paramref name="offset"/> of the target all equal
    /// <paramref name="pattern"/> (<c>qemu-io -c 'read -P PATTERN OFFSET LENGTH'</c>).
    /// </summary>
    public static async Task<bool> VerifyPatternAsync(string target, string? format, long offset, long length, byte pattern, CancellationToken cancellationToken = default)
    {
        var command = string.Create(CultureInfo.InvariantCulture, $"read -P 0x{pattern:x2} {offset} {length}");
        var result = await QemuIoAsync(target, format, [command], readOnly: true, throwOnFailure: false, cancellationToken: cancellationToken);
        if (result.StandardOutput.Contains("Pattern verification failed", StringComparison.Ordinal)
            || result.StandardError.Contains("Pattern verification failed", StringComparison.Ordinal))
        {
            return false;
        }

        return result.EnsureSuccess().Succeeded;
    }

    private static bool Flag(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.True;

    private static long? OptionalInt64(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt64() : null;
}
