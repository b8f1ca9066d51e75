using Drydock.Hypervisor.Qemu;
using Xunit;

namespace Drydock.Hypervisor.Tests.Qemu;

public sealed class CaptureNamesTests
{
    [Fact]
    public void Every_artefact_name_fits_qemu_node_names_and_parses_back_to_its_capture()
    {
        var id = CaptureNames.NewId();
        foreach (var name in new[] { CaptureNames.Fleece(id, 12), CaptureNames.Filter(id, 12), CaptureNames.Snapshot(id, 12), CaptureNames.Export(id, 12), CaptureNames.TempBitmap(id, 12) })
        {
            Assert.True(name.Length <= 31, name);
            Assert.True(CaptureNames.TryParse(name, out var parsed, out var disk), name);
            Assert.Equal((id, 12), (parsed, disk));
        }

        Assert.True(CaptureNames.TryParseFile(Path.GetFileName(CaptureNames.FleeceFile("/x", id, 3)), out var fromFile));
        Assert.Equal(id, fromFile);
        Assert.True(CaptureNames.TryParseFile(Path.GetFileName(CaptureNames.Sidecar("/x", id)), out fromFile));
        Assert.Equal(id, fromFile);
    }

    [Theory]
    [InlineData("drydock-20250101T000000Z-00000000")]
    [InlineData("ddcap-XYZ-0")]
    [InlineData("ddcap-0a1b2c3d-0-other")]
    [InlineData("fmt-vda")]
    public void Other_names_are_not_taken_for_capture_artefacts(string name) =>
        Assert.False(CaptureNames.TryParse(name, out _, out _));
}
