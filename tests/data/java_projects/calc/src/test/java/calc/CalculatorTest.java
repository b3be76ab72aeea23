package calc;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.junit.Test;

public class CalculatorTest {
    private final Calculator calc = new Calculator();

    @Test
    public void adds() {
        int sum = calc.add(2, 3);
        assertEquals(5, sum);
    }

    @Test
    public void knowsPositives() {
        assertTrue(calc.isPositive(4));
    }

    @Test
    public void wrongOnPurpose() {
        assertEquals(6, calc.add(2, 3));
    }

    public static class Nested {
        @Test
        public void addsZero() {
            assertEquals(7, new Calculator().add(7, 0));
        }
    }
}
