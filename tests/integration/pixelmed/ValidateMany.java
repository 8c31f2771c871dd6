// Runs PixelMed's DicomSRValidator over several files in one JVM, so the
// validator's templates are compiled once (test helper; launched as a
// single-file source program: java -cp pixelmed.jar ValidateMany.java FILES).
import com.pixelmed.validate.DicomSRValidator;

public class ValidateMany {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String file : args) {
            System.out.println("=== BEGIN " + file);
            System.out.print(validator.validate(file));
            System.out.println("=== END " + file);
        }
    }
}
