using System.Globalization;
using System.Text.RegularExpressions;

namespace Drydock.Hypervisor.Qemu;

/// <summary>
/// How the QEMU driver names what a capture creates, so that a later process finds it again (FAULTS.md F03).
/// Everything starts with <c>ddcap-ID-N</c> (ID: 8 hex digits; N: the disk's index in the domain's options);
/// QEMU node names are at most 31 characters, which this fits.
/// </summary>
internal static partial class CaptureNames
{
    /// <summary>Prefix of capture artefacts.</summary>
    public const string Prefix = "ddcap-";

    /// <summary>Prefix of restore export ids.</summary>
    public const string RestorePrefix = "ddrst-";

    /// <summary>Prefix of launched domains' guest export ids.</summary>
    public const string GuestPrefix = "ddguest-";

    public static string NewId() => DrydockNames.RandomSuffix();

    public static string Fleece(string id, int disk) => Node(id, disk, "fl");

    public static string Filter(string id, int disk) => Node(id, disk, "cbw");

    public static string Snapshot(string id, int disk) => Node(id, disk, "snap");

    public static string Export(string id, int disk) => string.Create(CultureInfo.InvariantCulture, $"{Prefix}{id}-{disk}");

    public static string TempBitmap(string id, int disk) => Export(id, disk);

    public static string FleeceFile(string directory, string id, int disk) =>
        Path.Combine(directory, string.Create(CultureInfo.InvariantCulture, $"{Prefix}{id}-{disk}.fleece"));

    public static string Sidecar(string directory, string id) => Path.Combine(directory, $"{Prefix}{id}.json");

    public static string RestoreExport(string id, int disk) => string.Create(CultureInfo.InvariantCulture, $"{RestorePrefix}{id}-{disk}");

    public static string GuestExport(string target) => GuestPrefix + target;

    /// <summary>
    /// The node a virtual machine's front node rests on while its format node is exported for a restore (the guest
    /// device keeps its write permission, which it does not share, on the front node).
    /// </summary>
    public static string RestorePlaceholder(string id, int disk) => RestoreExport(id, disk) + "-ph";

    /// <summary>
    /// The record of an NBD server the driver started (socket path and the socket file's identity), so that it, or a
    /// later process after a crash, stops that server once no NBD export remains, and never one it did not start.
    /// </summary>
    public static string NbdServerRecord(string directory) => Path.Combine(directory, "ddnbd-server.json");

    /// <summary>Recognises a capture artefact's name (node, export, bitmap or file name).</summary>
    public static bool TryParse(string name, out string id, out int disk)
    {
        var match = ArtefactPattern().Match(name);
        if (!match.Success)
        {
            id = string.Empty;
            disk = -1;
            return false;
        }

        id = match.Groups[1].Value;
        disk = int.Parse(match.Groups[2].Value, CultureInfo.InvariantCulture);
        return true;
    }

    /// <summary>Recognises a capture's sidecar or any artefact file, returning the capture id.</summary>
    public static bool TryParseFile(string fileName, out string id)
    {
        var match = FilePattern().Match(fileName);
        id = match.Success ? match.Groups[1].Value : string.Empty;
        return match.Success;
    }

    private static string Node(string id, int disk, string role) => string.Create(CultureInfo.InvariantCulture, $"{Prefix}{id}-{disk}-{role}");

    [GeneratedRegex("^ddcap-([0-9a-f]{8})-([0-9]{1,4})(?:-(?:fl|cbw|snap))?$", RegexOptions.CultureInvariant)]
    private static partial Regex ArtefactPattern();

    [GeneratedRegex(@"^ddcap-([0-9a-f]{8})(?:-[0-9]{1,4}\.fleece|\.json)$", RegexOptions.CultureInvariant)]
    private static partial Regex FilePattern();
}
